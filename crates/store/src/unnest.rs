//! PostgreSQL bulk writes with `UNNEST`: one statement per batch whatever
//! its size, with one array parameter per column.
//!
//! A multi-row `INSERT ... VALUES (...), (...)` has one bind parameter per
//! value, so its text (and the server's parse and plan) changes with the
//! number of rows, and a large batch is split into several statements. An
//! `INSERT ... SELECT ... FROM UNNEST($1::bigint[], $2::text[], ...)` has
//! one parameter per column: the same text for every batch (prepared once
//! per connection and cached), one round trip, and no parameter limit.
//!
//! The rows come from sea-orm active models, column by column, so a column
//! added to an entity is written without touching this module. Arrays of
//! PostgreSQL element types cannot carry NULL through sea-query, so a
//! column that holds a NULL in some row travels with a `boolean[]` of
//! null flags beside it and is written as `CASE WHEN null THEN NULL ELSE v END`.
//! Rows are inserted in array order (`WITH ORDINALITY ... ORDER BY`), so
//! serial ids ascend with it, as with the multi-row insert.

use sea_orm::sea_query::ArrayType;
use sea_orm::{
    ActiveModelTrait, ActiveValue, DbBackend, EntityTrait, Iden, Iterable, Statement, Value,
};

/// A column's values gathered from the rows, ready to bind as one array.
struct ColumnValues {
    name: String,
    /// The PostgreSQL array type to cast the parameter to.
    sql_type: &'static str,
    array_type: ArrayType,
    values: Vec<Value>,
    /// Per row: the value is NULL (its slot in `values` holds a placeholder).
    nulls: Vec<bool>,
}

/// How one `Value` variant travels in an array: the element's array type, the
/// SQL array type, and what stands in for a NULL.
fn element(v: &Value) -> Option<(ArrayType, &'static str, Value)> {
    Some(match v {
        Value::Bool(_) => (ArrayType::Bool, "boolean[]", Value::Bool(Some(false))),
        Value::SmallInt(_) => (ArrayType::SmallInt, "smallint[]", Value::SmallInt(Some(0))),
        Value::Int(_) => (ArrayType::Int, "integer[]", Value::Int(Some(0))),
        Value::BigInt(_) => (ArrayType::BigInt, "bigint[]", Value::BigInt(Some(0))),
        Value::Float(_) => (ArrayType::Float, "real[]", Value::Float(Some(0.0))),
        Value::Double(_) => (ArrayType::Double, "float8[]", Value::Double(Some(0.0))),
        Value::String(_) => (
            ArrayType::String,
            "text[]",
            Value::String(Some(String::new())),
        ),
        Value::Bytes(_) => (ArrayType::Bytes, "bytea[]", Value::Bytes(Some(Vec::new()))),
        _ => return None,
    })
}

/// Same variant, whatever the content.
fn same_variant(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// The columns set in the first row (a column left unset there, such as a
/// serial id, is left out), with every row's values. `None` when the rows
/// disagree about which columns are set.
pub(crate) fn rows_of<A>(rows: &[A]) -> Option<(Vec<String>, Vec<Vec<Value>>)>
where
    A: ActiveModelTrait,
{
    let first = rows.first()?;
    let set: Vec<_> = <<A::Entity as EntityTrait>::Column as Iterable>::iter()
        .filter(|col| {
            matches!(
                first.get(*col),
                ActiveValue::Set(_) | ActiveValue::Unchanged(_)
            )
        })
        .collect();
    let names = set.iter().map(|c| c.to_string()).collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = Vec::with_capacity(set.len());
        for col in &set {
            let (ActiveValue::Set(v) | ActiveValue::Unchanged(v)) = row.get(*col) else {
                return None;
            };
            values.push(v);
        }
        out.push(values);
    }
    Some((names, out))
}

/// Gathers rows of values into columns. `None` when a column holds a type
/// this module does not bind, or the rows disagree about a column's type:
/// the caller then writes another way.
fn gather(names: Vec<String>, rows: Vec<Vec<Value>>) -> Option<Vec<ColumnValues>> {
    let first = rows.first()?;
    let mut columns = Vec::with_capacity(names.len());
    for (name, v) in names.into_iter().zip(first) {
        let (array_type, sql_type, _) = element(v)?;
        columns.push(ColumnValues {
            name,
            sql_type,
            array_type,
            values: Vec::with_capacity(rows.len()),
            nulls: Vec::with_capacity(rows.len()),
        });
    }
    for row in rows {
        if row.len() != columns.len() {
            return None;
        }
        for (v, out) in row.into_iter().zip(columns.iter_mut()) {
            let (_, _, placeholder) = element(&v)?;
            if !same_variant(&v, &placeholder) {
                return None;
            }
            let null = !v.is_some();
            out.nulls.push(null);
            out.values.push(if null { placeholder } else { v });
        }
    }
    Some(columns)
}

/// The parts of an UNNEST over `columns`: the quoted column names, the
/// `UNNEST(...)` argument list, the column aliases of its rows (`c0`, `c1`,
/// ..., then `n<i>` null flags), the value expression of each column, and
/// the array parameters.
struct Unnest {
    names: Vec<String>,
    params: Vec<String>,
    aliases: Vec<String>,
    select: Vec<String>,
    values: Vec<Value>,
}

fn unnest(columns: Vec<ColumnValues>) -> Unnest {
    let mut u = Unnest {
        names: columns.iter().map(|c| format!("\"{}\"", c.name)).collect(),
        params: Vec::new(),
        aliases: Vec::new(),
        select: Vec::new(),
        values: Vec::new(),
    };
    let mut null_flags: Vec<(usize, Vec<bool>)> = Vec::new();
    for (i, c) in columns.into_iter().enumerate() {
        u.params
            .push(format!("${}::{}", u.values.len() + 1, c.sql_type));
        u.aliases.push(format!("c{i}"));
        u.values
            .push(Value::Array(c.array_type, Some(Box::new(c.values))));
        if c.nulls.iter().any(|n| *n) {
            null_flags.push((i, c.nulls));
            u.select
                .push(format!("CASE WHEN u.n{i} THEN NULL ELSE u.c{i} END"));
        } else {
            u.select.push(format!("u.c{i}"));
        }
    }
    for (i, flags) in null_flags {
        u.params.push(format!("${}::boolean[]", u.values.len() + 1));
        u.aliases.push(format!("n{i}"));
        u.values.push(Value::from(flags));
    }
    u
}

/// `INSERT INTO table (...) SELECT ... FROM UNNEST(...)` for `rows`, with
/// `suffix` appended (`ON CONFLICT ...`, `RETURNING ...`). `None` when the
/// rows cannot be bound as arrays (see [`gather`]) or there are none.
pub(crate) fn insert_statement<A>(rows: &[A], suffix: &str) -> Option<Statement>
where
    A: ActiveModelTrait,
{
    let (names, rows) = rows_of(rows)?;
    let u = unnest(gather(names, rows)?);
    let table = <A::Entity as Default>::default().to_string();
    let sql = format!(
        "INSERT INTO \"{table}\" ({}) SELECT {} FROM UNNEST({}) WITH ORDINALITY AS u({}, ord) \
         ORDER BY u.ord {suffix}",
        u.names.join(", "),
        u.select.join(", "),
        u.params.join(", "),
        u.aliases.join(", "),
    );
    Some(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        u.values,
    ))
}

/// Whether `rows` can be bound as arrays (see [`gather`]).
fn fits(rows: &[Vec<Value>]) -> bool {
    let Some(first) = rows.first() else {
        return false;
    };
    let Some(placeholders) = first
        .iter()
        .map(|v| element(v).map(|(_, _, p)| p))
        .collect::<Option<Vec<Value>>>()
    else {
        return false;
    };
    rows.iter().all(|row| {
        row.len() == placeholders.len()
            && row
                .iter()
                .zip(&placeholders)
                .all(|(v, p)| same_variant(v, p))
    })
}

/// `SELECT ... FROM UNNEST(...)`, a row source of `rows` (columns in
/// order, one array parameter per column, numbered from `$1`), for a `WITH
/// k(...) AS (...)` or an `INSERT INTO t (...) ...`. Its text is the same
/// whatever the number of rows, so PostgreSQL parses and plans it once per
/// connection, where a `VALUES` list of another length is a new statement.
/// The rows come back when they cannot be bound as arrays (see [`gather`])
/// or there are none.
pub(crate) fn select_source(
    rows: Vec<Vec<Value>>,
) -> Result<(String, Vec<Value>), Vec<Vec<Value>>> {
    if !fits(&rows) {
        return Err(rows);
    }
    let names = (0..rows[0].len()).map(|i| format!("c{i}")).collect();
    // fits() checked what gather() needs.
    let u = unnest(gather(names, rows).ok_or_else(Vec::new)?);
    let sql = format!(
        "SELECT {} FROM UNNEST({}) AS u({})",
        u.select.join(", "),
        u.params.join(", "),
        u.aliases.join(", "),
    );
    Ok((sql, u.values))
}

/// `UPDATE table SET ... FROM UNNEST(...) WHERE table.<first column> = ...`:
/// sets the other columns of every row whose key (the first of `names`)
/// matches. `None` when the rows cannot be bound as arrays or there are none.
pub(crate) fn update_statement(
    table: &str,
    names: Vec<String>,
    rows: Vec<Vec<Value>>,
) -> Option<Statement> {
    let u = unnest(gather(names, rows)?);
    let set: Vec<String> = u
        .names
        .iter()
        .zip(&u.select)
        .skip(1)
        .map(|(n, v)| format!("{n} = {v}"))
        .collect();
    let sql = format!(
        "UPDATE \"{table}\" AS t SET {} FROM UNNEST({}) AS u({}) WHERE t.{} = u.c0",
        set.join(", "),
        u.params.join(", "),
        u.aliases.join(", "),
        u.names[0],
    );
    Some(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        u.values,
    ))
}
