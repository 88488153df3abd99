//! Path templates: `{date}` `{year}` `{month}` `{day}` `{hour}` `{timestamp}`
//! `{batch_id}` (and the `${year}`, `{YYYY-MM-DD}`, `{YYYY}/{MM}/{DD}/{HH}`
//! spellings of the seeds).

use chrono::{DateTime, Datelike, Local, Timelike};

/// Renders `template` for `now` and epoch `batch_id`.
pub fn render(template: &str, now: DateTime<Local>, batch_id: u64) -> String {
    let t = template.replace("${", "{");
    t.replace("{date}", &now.format("%Y-%m-%d").to_string())
        .replace("{YYYY-MM-DD}", &now.format("%Y-%m-%d").to_string())
        .replace("{year}", &format!("{:04}", now.year()))
        .replace("{month}", &format!("{:02}", now.month()))
        .replace("{day}", &format!("{:02}", now.day()))
        .replace("{hour}", &format!("{:02}", now.hour()))
        .replace("{YYYY}", &format!("{:04}", now.year()))
        .replace("{MM}", &format!("{:02}", now.month()))
        .replace("{DD}", &format!("{:02}", now.day()))
        .replace("{HH}", &format!("{:02}", now.hour()))
        .replace("{timestamp}", &now.format("%Y%m%dT%H%M%S").to_string())
        .replace("{batch_id}", &format!("{batch_id:06}"))
}

/// Whether the template has a placeholder.
pub fn has(template: &str, placeholder: &str) -> bool {
    template.contains(&format!("{{{placeholder}}}"))
        || template.contains(&format!("${{{placeholder}}}"))
}

/// Inserts `-{suffix}` before the extension(s) of `path` (`a/b.jsonl.gz` -> `a/b-x.jsonl.gz`).
pub fn with_suffix(path: &str, suffix: &str) -> String {
    let (dir, file) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    match file.find('.') {
        Some(0) | None => format!("{dir}{file}-{suffix}"),
        Some(i) => format!("{dir}{}-{suffix}{}", &file[..i], &file[i..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn renders_all_placeholders() {
        let now = Local.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            render(
                "o/{year}/{month}/{day}/{hour}/{date}_{batch_id}.json",
                now,
                7
            ),
            "o/2024/01/02/03/2024-01-02_000007.json"
        );
        assert_eq!(render("x_{timestamp}", now, 0), "x_20240102T030405");
        assert_eq!(render("y=${year}/", now, 0), "y=2024/");
        assert_eq!(
            render("a/{YYYY}/{MM}/{DD}/{HH}/", now, 0),
            "a/2024/01/02/03/"
        );
        assert_eq!(
            with_suffix("out/a.jsonl.gz", "000001"),
            "out/a-000001.jsonl.gz"
        );
        assert_eq!(with_suffix("out/a", "2"), "out/a-2");
    }
}
