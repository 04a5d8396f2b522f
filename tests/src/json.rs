//! Reading API answers by JSON pointer (`/latest/interfaces/0/name`), with
//! panics that show the pointer and the document.

use serde_json::Value;

fn at<'a>(v: &'a Value, ptr: &str) -> &'a Value {
    v.pointer(ptr).unwrap_or_else(|| panic!("no {ptr} in {v}"))
}

/// The string at `ptr`.
pub fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    at(v, ptr)
        .as_str()
        .unwrap_or_else(|| panic!("{ptr} is not a string in {v}"))
}

/// The unsigned integer at `ptr`.
pub fn u64_at(v: &Value, ptr: &str) -> u64 {
    at(v, ptr)
        .as_u64()
        .unwrap_or_else(|| panic!("{ptr} is not an unsigned integer in {v}"))
}

/// The number at `ptr`.
pub fn f64_at(v: &Value, ptr: &str) -> f64 {
    at(v, ptr)
        .as_f64()
        .unwrap_or_else(|| panic!("{ptr} is not a number in {v}"))
}

/// The boolean at `ptr`.
pub fn bool_at(v: &Value, ptr: &str) -> bool {
    at(v, ptr)
        .as_bool()
        .unwrap_or_else(|| panic!("{ptr} is not a boolean in {v}"))
}

/// The array at `ptr`.
pub fn array_at<'a>(v: &'a Value, ptr: &str) -> &'a Vec<Value> {
    at(v, ptr)
        .as_array()
        .unwrap_or_else(|| panic!("{ptr} is not an array in {v}"))
}

/// The RFC 3339 time at `ptr`, as Unix milliseconds.
pub fn time_at(v: &Value, ptr: &str) -> i64 {
    crate::rfc3339_ms(ptr, str_at(v, ptr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_by_pointer() {
        let v = serde_json::json!({"a": {"b": [1, "x", true, 2.5, "2026-01-01T00:00:00.001Z"]}});
        assert_eq!(u64_at(&v, "/a/b/0"), 1);
        assert_eq!(str_at(&v, "/a/b/1"), "x");
        assert!(bool_at(&v, "/a/b/2"));
        assert_eq!(f64_at(&v, "/a/b/3"), 2.5);
        assert_eq!(time_at(&v, "/a/b/4"), 1_767_225_600_001);
        assert_eq!(array_at(&v, "/a/b").len(), 5);
    }

    #[test]
    #[should_panic(expected = "no /a/c in")]
    fn names_what_is_missing() {
        u64_at(&serde_json::json!({"a": {}}), "/a/c");
    }
}
