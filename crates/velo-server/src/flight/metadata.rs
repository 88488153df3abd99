//! What ADBC and the JDBC driver ask a Flight SQL server about itself:
//! its SQL info (name, version, what it supports) and the SQL types it
//! knows, in the forms arrow-flight's builders write.

use std::sync::LazyLock;

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{Nullable, Searchable, SqlInfo, SqlSupportedTransaction, XdbcDataType};

/// The catalog every job's table and stream is in.
pub const CATALOG: &str = "velo";
/// The schema every job's table and stream is in.
pub const SCHEMA: &str = "jobs";
/// A `CREATE TABLE` job: queryable as of its last committed epoch.
pub const TABLE: &str = "TABLE";
/// A `CREATE STREAM` job: subscribed to with `EMIT CHANGES`.
pub const STREAM: &str = "STREAM";

/// The server's SQL info.
pub static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Velostream");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // the Arrow IPC format version (Schema.fbs MetadataVersion V5)
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.build().expect("the server's SQL info")
});

/// One type of [`XDBC_TYPES`].
fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    literal: Option<&str>,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: literal.map(str::to_string),
        literal_suffix: literal.map(str::to_string),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(data_type, XdbcDataType::XdbcVarchar),
        searchable: Searchable::Full,
        unsigned_attribute: Some(false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: column_size.map(|_| 10),
        interval_precision: None,
    }
}

/// The SQL types of DataFusion's dialect that the server's results use.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    for t in [
        xdbc("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None),
        xdbc("TINYINT", XdbcDataType::XdbcTinyint, Some(3), None),
        xdbc("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), None),
        xdbc("INTEGER", XdbcDataType::XdbcInteger, Some(10), None),
        xdbc("BIGINT", XdbcDataType::XdbcBigint, Some(19), None),
        xdbc("FLOAT", XdbcDataType::XdbcFloat, Some(24), None),
        xdbc("DOUBLE", XdbcDataType::XdbcDouble, Some(53), None),
        xdbc("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), None),
        xdbc("VARCHAR", XdbcDataType::XdbcVarchar, None, Some("'")),
        xdbc("BYTEA", XdbcDataType::XdbcBinary, None, None),
        xdbc("DATE", XdbcDataType::XdbcDate, None, Some("'")),
        xdbc("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, Some("'")),
    ] {
        b.append(t);
    }
    b.build().expect("the server's SQL types")
});
