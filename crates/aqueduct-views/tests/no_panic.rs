//! No ViewDefinition and no resource makes the engine panic: random definitions (built from
//! the spec's own shapes with random FHIRPath made of real tokens) over random resources
//! either compile and run, or are refused with an error.

use aqueduct_views::View;
use proptest::prelude::*;
use serde_json::{Value, json};

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "name",
        "given",
        "family",
        "value",
        "id",
        "active",
        "code",
        "coding",
        "extension",
        ".",
        ".",
        "(",
        ")",
        "[",
        "]",
        "0",
        "1",
        "2.5",
        "'x'",
        "=",
        "!=",
        "<",
        ">=",
        "and",
        "or",
        "xor",
        "implies",
        "+",
        "-",
        "*",
        "/",
        "div",
        "mod",
        "|",
        "&",
        "where(",
        "exists(",
        "empty()",
        "first()",
        "last()",
        "count()",
        "not()",
        "join(",
        "ofType(",
        "Quantity",
        "string",
        "extension(",
        "getResourceKey()",
        "getReferenceKey(",
        "lowBoundary()",
        "highBoundary()",
        "%rowIndex",
        "%c",
        "%resource",
        "$this",
        "@2020-01",
        "@T10:00",
        "{}",
        ",",
        "is",
        "as",
        "iif(",
        "select(",
        "repeat",
        "`x`",
        "true",
        "false",
        " ",
    ])
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(token(), 1..8).prop_map(|t| t.concat()),
        prop::sample::select(vec![
            "name.family",
            "name.given",
            "id",
            "value.ofType(Quantity).value",
            "name",
            "name.where(use = 'official').family.first()",
            "telecom",
            "extension.value",
            "contact",
            "item",
            "answer.item",
            "%rowIndex",
            "name.given.join(', ')",
            "getResourceKey()",
            "subject.getReferenceKey(Patient)",
            "value.ofType(dateTime).lowBoundary()",
        ])
        .prop_map(str::to_string),
        ".{0,12}",
    ]
}

fn select(depth: u32) -> BoxedStrategy<Value> {
    let column = (
        "[a-z]{1,2}",
        path(),
        prop::option::of(prop::sample::select(vec![
            "string", "integer", "decimal", "boolean", "dateTime", "code",
        ])),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(n, p, t, c)| {
            let mut col = json!({"name": n, "path": p});
            if let Some(t) = t {
                col["type"] = json!(t);
            }
            if let Some(c) = c {
                col["collection"] = json!(c);
            }
            col
        });
    let leaf = (
        prop::collection::vec(column, 0..3),
        prop::option::of((0u8..4, path())),
    )
        .prop_map(|(cols, it)| {
            let mut s = json!({"column": cols});
            if let Some((kind, p)) = it {
                match kind {
                    0 => s["forEach"] = json!(p),
                    1 => s["forEachOrNull"] = json!(p),
                    2 => s["repeat"] = json!([p]),
                    _ => s["forEach"] = json!(1),
                }
            }
            s
        });
    if depth == 0 {
        return leaf.boxed();
    }
    (
        leaf,
        prop::collection::vec(select(depth - 1), 0..2),
        prop::collection::vec(select(depth - 1), 0..3),
    )
        .prop_map(|(mut s, nested, union)| {
            if !nested.is_empty() {
                s["select"] = json!(nested);
            }
            if !union.is_empty() {
                s["unionAll"] = json!(union);
            }
            s
        })
        .boxed()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z0-9:./-]{0,10}".prop_map(Value::String),
        Just(json!("2020-01-02T10:00:00Z")),
        Just(json!("Patient/p1")),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "name",
                    "given",
                    "family",
                    "value",
                    "valueQuantity",
                    "valueDateTime",
                    "id",
                    "use",
                    "extension",
                    "url",
                    "item",
                    "answer",
                    "reference",
                    "code",
                    "coding",
                ])
                .prop_map(str::to_string),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn resource() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(vec![
            "id",
            "name",
            "active",
            "value",
            "valueQuantity",
            "telecom",
            "contact",
            "item",
            "extension",
            "subject",
            "birthDate",
        ])
        .prop_map(str::to_string),
        json_value(),
        0..6,
    )
    .prop_map(|m| {
        let mut obj: serde_json::Map<String, Value> = m.into_iter().collect();
        obj.insert("resourceType".into(), json!("Patient"));
        Value::Object(obj)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn random_views_over_random_resources_never_panic(
        selects in prop::collection::vec(select(2), 0..3),
        wheres in prop::collection::vec(path(), 0..2),
        resources in prop::collection::vec(resource(), 1..4),
        constant in prop::option::of(json_value()),
    ) {
        let mut view = json!({"resource": "Patient", "select": selects});
        if !wheres.is_empty() {
            view["where"] = json!(wheres.iter().map(|p| json!({"path": p})).collect::<Vec<_>>());
        }
        if let Some(c) = constant {
            view["constant"] = json!([{"name": "c", "valueString": c}]);
        }
        if let Ok(v) = View::compile(&view) {
            for r in &resources {
                if let Ok(rows) = v.rows(r) {
                    for row in rows {
                        prop_assert_eq!(row.len(), v.columns().len());
                    }
                }
            }
        }
    }

    #[test]
    fn any_json_as_a_view_definition_is_refused_or_compiled(def in json_value()) {
        let _ = View::compile(&def);
    }
}
