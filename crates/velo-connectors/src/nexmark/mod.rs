//! The Nexmark generator source (`type = 'nexmark'`): the online-auction
//! event stream of the Nexmark benchmark, as one of its three tables
//! (`table = 'bid' | 'auction' | 'person'`).
//!
//! Where it sits: a source like `datagen`, decoding nothing: rows are built
//! straight into Arrow arrays. It follows the standard generator (Beam /
//! Flink Nexmark): event number `n` is a person, an auction or a bid in the
//! proportion 1 : 3 : 46 out of every 50 events; ids, hot auctions, hot
//! bidders and sellers, prices (`10^(6u) * 100` cents-like units), channels
//! and URLs come from the same constants. Every value is a hash of (seed,
//! field, event number), so the stream does not depend on batch sizes, and
//! event time is `start_time + n / event_rate`.

use std::fmt::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use velo_config::keys::{KeySpec, KeyType};
use velo_config::{ConfigError, ConnectorConfig};

use crate::Result;
use crate::source::{Source, SourceReader};

/// Keys of `nexmark`.
pub const KEYS: &[KeySpec] = &[
    KeySpec::new(
        "table",
        KeyType::Enum(&["bid", "auction", "person"]),
        Some("bid"),
        "Which of the event stream's tables this source reads",
    ),
    KeySpec::new(
        "events",
        KeyType::UInt,
        Some("10000000 (unbounded if a rate is set)"),
        "Events of the whole stream (persons, auctions and bids) to generate, then stop; a bid table gets 46/50 of them",
    ),
    KeySpec::new(
        "rate",
        KeyType::UInt,
        None,
        "Events of the whole stream per second of wall clock (paced); default: as fast as possible",
    ),
    KeySpec::new(
        "event_rate",
        KeyType::UInt,
        Some("10000"),
        "Events per second of event time: event n happens at start_time + n / event_rate",
    ),
    KeySpec::new(
        "start_time",
        KeyType::UInt,
        Some("1704067200000"),
        "Event time (epoch millis) of the first event",
    ),
    KeySpec::new(
        "seed",
        KeyType::UInt,
        Some("42"),
        "Seed: the same seed gives the same events",
    ),
    KeySpec::new(
        "batch_size",
        KeyType::UInt,
        Some("8192"),
        "Rows per generated batch",
    ),
];

/// The three tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// People registering.
    Person,
    /// Items put up for auction.
    Auction,
    /// Bids on auctions.
    Bid,
}

/// Typed `nexmark` settings.
#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    /// The table.
    pub table: Table,
    /// Events of the whole stream, `None`: unbounded.
    pub events: Option<u64>,
    /// Wall-clock pacing in events per second.
    pub rate: Option<u64>,
    /// Events per second of event time.
    pub event_rate: u64,
    /// Event time of event 0.
    pub start_time: i64,
    /// Seed.
    pub seed: u64,
    /// Rows per batch.
    pub batch_size: usize,
}

impl NexmarkConfig {
    /// From the resolved connector config.
    pub fn from_config(cfg: &ConnectorConfig) -> std::result::Result<Self, ConfigError> {
        let table = match cfg
            .get("table")
            .unwrap_or("bid")
            .to_ascii_lowercase()
            .as_str()
        {
            "bid" | "bids" => Table::Bid,
            "auction" | "auctions" => Table::Auction,
            "person" | "persons" | "people" => Table::Person,
            other => return Err(cfg.invalid("table", other, "bid, auction or person")),
        };
        let rate = cfg.uint("rate")?.filter(|r| *r > 0);
        let events = match cfg.uint("events")? {
            Some(n) => Some(n),
            None if rate.is_some() => None,
            None => Some(10_000_000),
        };
        let event_rate = cfg.uint("event_rate")?.unwrap_or(10_000);
        if event_rate == 0 {
            return Err(cfg.invalid("event_rate", "0", "a positive number of events per second"));
        }
        Ok(Self {
            table,
            events,
            rate,
            event_rate,
            start_time: cfg
                .uint("start_time")?
                .map(|v| v as i64)
                .unwrap_or(1_704_067_200_000),
            seed: cfg.uint("seed")?.unwrap_or(42),
            batch_size: cfg.uint("batch_size")?.unwrap_or(8192).max(1) as usize,
        })
    }
}

// The standard generator's constants.
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const PROPORTION_DENOMINATOR: u64 = 50;
const FIRST_PERSON_ID: u64 = 1000;
const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u64 = 5;
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDER_RATIO: u64 = 4;
const HOT_SELLER_RATIO: u64 = 4;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
const CHANNELS: &[&str] = &["Google", "Facebook", "Baidu", "Apple"];
const US_STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: &[&str] = &[
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: &[&str] = &[
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: &[&str] = &[
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// The table event `n` belongs to.
pub fn table_of(n: u64) -> Table {
    let offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        Table::Person
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        Table::Auction
    } else {
        Table::Bid
    }
}

/// The id (from 0) of the last person created at or before event `n`.
// the standard generator's formula; with one person in every 50 events the
// offset is always 0
#[allow(clippy::unnecessary_min_or_max)]
fn last_person(n: u64) -> u64 {
    let epoch = n / PROPORTION_DENOMINATOR;
    let offset = (n % PROPORTION_DENOMINATOR).min(PERSON_PROPORTION - 1);
    epoch * PERSON_PROPORTION + offset
}

/// The id (from 0) of the last auction created at or before event `n`.
fn last_auction(n: u64) -> u64 {
    let mut epoch = n / PROPORTION_DENOMINATOR;
    let mut offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        // before this epoch's first auction: the last one of the epoch before
        epoch = epoch.saturating_sub(1);
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

use crate::datagen::source::{mix, unit};

/// One event's random draws: `r.int(field, bound)` is uniform in [0, bound).
struct Draw {
    seed: u64,
    n: u64,
}

impl Draw {
    fn int(&self, field: u64, bound: u64) -> u64 {
        mix(self.seed, field, self.n) % bound.max(1)
    }
    fn unit(&self, field: u64) -> f64 {
        unit(mix(self.seed, field, self.n))
    }
    /// `10^(6u) * 100`, rounded: the generator's long-tailed prices.
    fn price(&self, field: u64) -> i64 {
        (10f64.powf(self.unit(field) * 6.0) * 100.0).round() as i64
    }
    /// Lower-case letters, `len` of them.
    fn string(&self, field: u64, len: usize, out: &mut String) {
        let mut h = mix(self.seed, field, self.n);
        for i in 0..len {
            if i % 12 == 11 {
                h = mix(h, field, self.n);
            }
            out.push((b'a' + (h % 26) as u8) as char);
            h /= 26;
        }
    }
    /// A recently active person (ids from 0).
    fn person(&self, field: u64) -> u64 {
        let people = last_person(self.n) + 1;
        let active = people.min(NUM_ACTIVE_PEOPLE);
        let k = self.int(field, active + PERSON_ID_LEAD);
        (people - active + k).min(people + PERSON_ID_LEAD)
    }
    /// An auction in flight (ids from 0).
    fn auction(&self, field: u64) -> u64 {
        let last = last_auction(self.n);
        let min = last.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
        min + self.int(field, last - min + 1 + AUCTION_ID_LEAD)
    }
}

/// The schema of a table.
pub fn schema_of(table: Table) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let f = |n: &str, t: DataType| Field::new(n, t, true);
    let fields = match table {
        Table::Bid => vec![
            f("auction", DataType::Int64),
            f("bidder", DataType::Int64),
            f("price", DataType::Int64),
            f("channel", DataType::Utf8),
            f("url", DataType::Utf8),
            f("date_time", ts()),
            f("extra", DataType::Utf8),
        ],
        Table::Auction => vec![
            f("id", DataType::Int64),
            f("item_name", DataType::Utf8),
            f("description", DataType::Utf8),
            f("initial_bid", DataType::Int64),
            f("reserve", DataType::Int64),
            f("date_time", ts()),
            f("expires", ts()),
            f("seller", DataType::Int64),
            f("category", DataType::Int64),
            f("extra", DataType::Utf8),
        ],
        Table::Person => vec![
            f("id", DataType::Int64),
            f("name", DataType::Utf8),
            f("email_address", DataType::Utf8),
            f("credit_card", DataType::Utf8),
            f("city", DataType::Utf8),
            f("state", DataType::Utf8),
            f("date_time", ts()),
            f("extra", DataType::Utf8),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// A column being built (strings through one reused buffer).
enum Col {
    Skip,
    Int(Vec<i64>),
    Ts(Vec<i64>),
    Str(arrow::array::StringBuilder, String),
}

impl Col {
    fn int(&mut self, v: impl FnOnce() -> i64) {
        if let Col::Int(a) | Col::Ts(a) = self {
            a.push(v());
        }
    }
    fn str(&mut self, v: impl FnOnce(&mut String)) {
        if let Col::Str(b, s) = self {
            s.clear();
            v(s);
            b.append_value(s.as_str());
        }
    }
}

/// The generator of one table.
#[derive(Debug)]
pub struct NexmarkSource {
    name: String,
    cfg: NexmarkConfig,
    schema: SchemaRef,
}

impl NexmarkSource {
    /// A generator.
    pub fn new(name: &str, cfg: NexmarkConfig) -> Self {
        Self {
            name: name.to_string(),
            schema: schema_of(cfg.table),
            cfg,
        }
    }

    /// The rows of this table among events `[from, to)`; the columns
    /// `nulls` has are not generated but null.
    pub fn generate(
        cfg: &NexmarkConfig,
        schema: &SchemaRef,
        from: u64,
        to: u64,
        nulls: Option<&crate::source::NullColumns>,
    ) -> Result<RecordBatch> {
        let mut cols: Vec<Col> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if nulls.is_some_and(|n| !n.is_read(i)) {
                    Col::Skip
                } else {
                    match f.data_type() {
                        DataType::Int64 => Col::Int(Vec::new()),
                        DataType::Timestamp(..) => Col::Ts(Vec::new()),
                        _ => Col::Str(arrow::array::StringBuilder::new(), String::new()),
                    }
                }
            })
            .collect();
        let mut rows = 0usize;
        let time = |n: u64| cfg.start_time + (n as u128 * 1000 / cfg.event_rate as u128) as i64;
        for n in from..to {
            if table_of(n) != cfg.table {
                continue;
            }
            rows += 1;
            let d = Draw { seed: cfg.seed, n };
            let ts = time(n);
            match cfg.table {
                Table::Bid => {
                    let auction = if d.int(1, HOT_AUCTION_RATIO) > 0 {
                        // a hot auction
                        (last_auction(n) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
                    } else {
                        d.auction(2)
                    };
                    let bidder = if d.int(3, HOT_BIDDER_RATIO) > 0 {
                        (last_person(n) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
                    } else {
                        d.person(4)
                    };
                    let channel = d.int(6, CHANNELS.len() as u64) as usize;
                    cols[0].int(|| (auction + FIRST_AUCTION_ID) as i64);
                    cols[1].int(|| (bidder + FIRST_PERSON_ID) as i64);
                    cols[2].int(|| d.price(5));
                    cols[3].str(|s| s.push_str(CHANNELS[channel]));
                    cols[4].str(|s| {
                        s.push_str("https://www.nexmark.com/");
                        d.string(7, 5, s);
                        s.push('/');
                        d.string(8, 5, s);
                        s.push('/');
                        d.string(9, 5, s);
                        s.push_str("/item.htm?query=1&channel_id=");
                        let _ = write!(s, "{}", channel as u64 * 1000 + d.int(10, 1000));
                    });
                    cols[5].int(|| ts);
                    cols[6].str(|s| d.string(11, 8 + d.int(12, 16) as usize, s));
                }
                Table::Auction => {
                    let id = last_auction(n) + FIRST_AUCTION_ID;
                    let initial = d.price(3);
                    let seller = if d.int(6, HOT_SELLER_RATIO) > 0 {
                        (last_person(n) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
                    } else {
                        d.person(7)
                    };
                    cols[0].int(|| id as i64);
                    cols[1].str(|s| d.string(1, 20, s));
                    cols[2].str(|s| d.string(2, 100, s));
                    cols[3].int(|| initial);
                    cols[4].int(|| initial + d.price(4));
                    cols[5].int(|| ts);
                    // open for 2 to 20 s of event time
                    cols[6].int(|| ts + 2_000 + d.int(5, 18_000) as i64);
                    cols[7].int(|| (seller + FIRST_PERSON_ID) as i64);
                    cols[8].int(|| (FIRST_CATEGORY_ID + d.int(8, NUM_CATEGORIES)) as i64);
                    cols[9].str(|s| d.string(9, 8 + d.int(10, 16) as usize, s));
                }
                Table::Person => {
                    let id = last_person(n) + FIRST_PERSON_ID;
                    cols[0].int(|| id as i64);
                    cols[1].str(|s| {
                        s.push_str(FIRST_NAMES[d.int(1, FIRST_NAMES.len() as u64) as usize]);
                        s.push(' ');
                        s.push_str(LAST_NAMES[d.int(2, LAST_NAMES.len() as u64) as usize]);
                    });
                    cols[2].str(|s| {
                        d.string(3, 7, s);
                        s.push('@');
                        d.string(4, 5, s);
                        s.push_str(".com");
                    });
                    cols[3].str(|s| {
                        for g in 0..4 {
                            if g > 0 {
                                s.push(' ');
                            }
                            let _ = write!(s, "{:04}", d.int(5 + g, 10_000));
                        }
                    });
                    cols[4]
                        .str(|s| s.push_str(US_CITIES[d.int(9, US_CITIES.len() as u64) as usize]));
                    cols[5]
                        .str(|s| s.push_str(US_STATES[d.int(10, US_STATES.len() as u64) as usize]));
                    cols[6].int(|| ts);
                    cols[7].str(|s| d.string(11, 8 + d.int(12, 16) as usize, s));
                }
            }
        }
        let arrays: Vec<ArrayRef> = cols
            .into_iter()
            .zip(schema.fields())
            .enumerate()
            .map(|(i, (c, f))| -> ArrayRef {
                match c {
                    Col::Skip => nulls
                        .and_then(|n| n.get(i, rows))
                        .unwrap_or_else(|| arrow::array::new_null_array(f.data_type(), rows)),
                    Col::Int(v) => Arc::new(Int64Array::from(v)),
                    Col::Ts(v) => Arc::new(TimestampMillisecondArray::from(v)),
                    Col::Str(mut b, _) => Arc::new(b.finish()) as Arc<StringArray>,
                }
            })
            .collect();
        Ok(RecordBatch::try_new(schema.clone(), arrays)?)
    }

    /// Events of the whole stream that hold `rows` rows of `table` (about).
    fn events_for(table: Table, rows: usize) -> u64 {
        let per_50 = match table {
            Table::Person => PERSON_PROPORTION,
            Table::Auction => AUCTION_PROPORTION,
            Table::Bid => PROPORTION_DENOMINATOR - PERSON_PROPORTION - AUCTION_PROPORTION,
        };
        (rows as u64 * PROPORTION_DENOMINATOR)
            .div_ceil(per_50)
            .max(1)
    }
}

impl Source for NexmarkSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.cfg.events.is_some()
    }

    fn describe(&self) -> String {
        format!(
            "nexmark {:?} table of {} events{}",
            self.cfg.table,
            self.cfg
                .events
                .map(|r| r.to_string())
                .unwrap_or_else(|| "unbounded".into()),
            self.cfg
                .rate
                .map(|r| format!(" at {r} events/s"))
                .unwrap_or_default()
        )
    }

    fn open(&self, batch_size: usize, projection: Option<&[usize]>) -> Result<SourceReader> {
        self.open_part(batch_size, projection, 0, 1)
    }

    fn splittable(&self) -> bool {
        true
    }

    /// Part `part` of `parts` generates every `parts`-th span of events
    /// (a batch's worth), at its share of the rate: an event is a function
    /// of its number, so the parts together make the stream of one reader.
    fn open_part(
        &self,
        batch_size: usize,
        projection: Option<&[usize]>,
        part: usize,
        parts: usize,
    ) -> Result<SourceReader> {
        let cfg = self.cfg.clone();
        let schema = self.schema.clone();
        let span = Self::events_for(cfg.table, cfg.batch_size.min(batch_size.max(1)));
        let nulls = crate::source::NullColumns::new(
            &schema,
            |i| projection.is_none_or(|p| p.contains(&i)),
            cfg.batch_size.min(batch_size.max(1)),
        );
        crate::source::generator_part(
            format!("velo-nexmark-{}", self.name),
            cfg.rate,
            cfg.events,
            span,
            part,
            parts,
            move |from, n| Self::generate(&cfg, &schema, from, from + n, Some(&nulls)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    fn cfg(table: Table) -> NexmarkConfig {
        NexmarkConfig {
            table,
            events: Some(50_000),
            rate: None,
            event_rate: 10_000,
            start_time: 0,
            seed: 7,
            batch_size: 1000,
        }
    }

    #[test]
    fn proportions_and_ids_follow_the_standard_generator() {
        let bids =
            NexmarkSource::generate(&cfg(Table::Bid), &schema_of(Table::Bid), 0, 50_000, None)
                .unwrap();
        let auctions = NexmarkSource::generate(
            &cfg(Table::Auction),
            &schema_of(Table::Auction),
            0,
            50_000,
            None,
        )
        .unwrap();
        let people = NexmarkSource::generate(
            &cfg(Table::Person),
            &schema_of(Table::Person),
            0,
            50_000,
            None,
        )
        .unwrap();
        assert_eq!(
            (people.num_rows(), auctions.num_rows(), bids.num_rows()),
            (1_000, 3_000, 46_000)
        );
        // auction and person ids are dense from 1000
        let ids = auctions.column(0).as_primitive::<Int64Type>();
        assert!(ids.values().iter().copied().eq(1000..4000));
        let ids = people.column(0).as_primitive::<Int64Type>();
        assert!(ids.values().iter().copied().eq(1000..2000));
        // bids name auctions and bidders that exist (or are about to)
        let a = bids.column(0).as_primitive::<Int64Type>();
        assert!(a.values().iter().all(|v| (1000..4000 + 10).contains(v)));
        // hot auctions: about half the bids go to one auction id of each pair
        let even = a.values().iter().filter(|v| *v % 2 == 0).count();
        assert!(even > 46_000 * 6 / 10, "{even}");
        let p = bids.column(2).as_primitive::<Int64Type>();
        assert!(p.values().iter().all(|v| (100..=100_000_000).contains(v)));
        // event time: 10,000 events per second
        let t = bids
            .column(5)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(t.value(t.len() - 1), 4_999);
    }

    #[test]
    fn the_stream_does_not_depend_on_batch_boundaries() {
        let c = cfg(Table::Bid);
        let s = schema_of(Table::Bid);
        let whole = NexmarkSource::generate(&c, &s, 0, 10_000, None).unwrap();
        let parts: Vec<RecordBatch> = [(0, 333), (333, 5_000), (5_000, 10_000)]
            .iter()
            .map(|(a, b)| NexmarkSource::generate(&c, &s, *a, *b, None).unwrap())
            .collect();
        let joined = arrow::compute::concat_batches(&s, &parts).unwrap();
        assert_eq!(whole, joined);
        // a projection builds only what is read
        let read = crate::source::NullColumns::new(&s, |i| [0, 2].contains(&i), 64);
        let some = NexmarkSource::generate(&c, &s, 0, 100, Some(&read)).unwrap();
        assert_eq!(some.column(4).null_count(), some.num_rows());
        assert_eq!(some.column(2), &whole.column(2).slice(0, some.num_rows()));
    }

    /// The parts of a split Nexmark stream together make the stream of one
    /// reader (same rows, same values), each part in event order, also when
    /// paced.
    #[test]
    fn parts_together_make_the_stream_of_one_reader() {
        for (table, rate) in [
            (Table::Bid, None),
            (Table::Auction, None),
            (Table::Person, Some(200_000)),
        ] {
            let src = NexmarkSource::new("n", NexmarkConfig { rate, ..cfg(table) });
            // (event time, every column as text) of each row
            let rows = |reader| {
                let mut out = Vec::new();
                for b in crate::source::drain_batches(reader) {
                    let ts = b.column(schema_of(table).index_of("date_time").unwrap());
                    let ts = ts.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
                    for r in 0..b.num_rows() {
                        let all: Vec<String> = b
                            .columns()
                            .iter()
                            .map(|c| arrow::util::display::array_value_to_string(c, r).unwrap())
                            .collect();
                        out.push((ts.value(r), all));
                    }
                }
                out
            };
            let mut whole = rows(src.open(1000, None).unwrap());
            assert!(whole.len() >= 1_000, "{table:?}");
            whole.sort();
            for parts in 2..=3 {
                let mut all = Vec::new();
                for part in 0..parts {
                    let got = rows(src.open_part(1000, None, part, parts).unwrap());
                    assert!(!got.is_empty(), "{table:?} part {part} of {parts}");
                    assert!(
                        got.windows(2).all(|w| w[0].0 <= w[1].0),
                        "{table:?} part {part} of {parts} in event order"
                    );
                    all.extend(got);
                }
                all.sort();
                assert_eq!(all, whole, "{table:?}, rate {rate:?}, {parts} parts");
            }
        }
    }
}
