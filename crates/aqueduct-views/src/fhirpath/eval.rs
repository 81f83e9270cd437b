//! Evaluation of a parsed expression over a resource's JSON.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::PathError;
use super::boundary::boundary;
use super::parse::{BinOp, Expr};

/// One element of a FHIRPath collection: a node of the resource (with the FHIR type its
/// choice suffix named, if any) or a value the expression computed.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    Node(&'a Value, Option<&'static str>),
    Bool(bool),
    Int(i64),
    Dec(f64),
    /// A string, or a date/dateTime/time/code... when the type is known.
    Str(String, Option<&'static str>),
}

/// What an expression sees besides its focus: the resource, the view's constants, and the
/// index of the row being built (`%rowIndex`).
pub struct Env<'a, 'c> {
    pub resource: &'a Value,
    pub constants: &'c HashMap<String, Item<'static>>,
    pub row_index: i64,
}

/// The FHIR type suffixes a choice element (`value[x]`) can carry, with their type names.
const CHOICE_TYPES: [(&str, &str); 52] = [
    ("Base64Binary", "base64Binary"),
    ("Boolean", "boolean"),
    ("Canonical", "canonical"),
    ("Code", "code"),
    ("Date", "date"),
    ("DateTime", "dateTime"),
    ("Decimal", "decimal"),
    ("Id", "id"),
    ("Instant", "instant"),
    ("Integer", "integer"),
    ("Integer64", "integer64"),
    ("Markdown", "markdown"),
    ("Oid", "oid"),
    ("PositiveInt", "positiveInt"),
    ("String", "string"),
    ("Time", "time"),
    ("UnsignedInt", "unsignedInt"),
    ("Uri", "uri"),
    ("Url", "url"),
    ("Uuid", "uuid"),
    ("Address", "Address"),
    ("Age", "Age"),
    ("Annotation", "Annotation"),
    ("Attachment", "Attachment"),
    ("CodeableConcept", "CodeableConcept"),
    ("CodeableReference", "CodeableReference"),
    ("Coding", "Coding"),
    ("ContactPoint", "ContactPoint"),
    ("Count", "Count"),
    ("Distance", "Distance"),
    ("Duration", "Duration"),
    ("HumanName", "HumanName"),
    ("Identifier", "Identifier"),
    ("Money", "Money"),
    ("Period", "Period"),
    ("Quantity", "Quantity"),
    ("Range", "Range"),
    ("Ratio", "Ratio"),
    ("RatioRange", "RatioRange"),
    ("Reference", "Reference"),
    ("SampledData", "SampledData"),
    ("Signature", "Signature"),
    ("Timing", "Timing"),
    ("ContactDetail", "ContactDetail"),
    ("DataRequirement", "DataRequirement"),
    ("Expression", "Expression"),
    ("ParameterDefinition", "ParameterDefinition"),
    ("RelatedArtifact", "RelatedArtifact"),
    ("TriggerDefinition", "TriggerDefinition"),
    ("UsageContext", "UsageContext"),
    ("Dosage", "Dosage"),
    ("Meta", "Meta"),
];

/// FHIR primitive types that specialise another (`code` is a `string`, `url` a `uri`...).
fn parent_type(t: &str) -> Option<&'static str> {
    Some(match t {
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "positiveInt" | "unsignedInt" => "integer",
        "Age" | "Count" | "Distance" | "Duration" | "Money" => "Quantity",
        _ => return None,
    })
}

const STRING_TYPES: [&str; 16] = [
    "string",
    "code",
    "id",
    "markdown",
    "uri",
    "url",
    "canonical",
    "oid",
    "uuid",
    "base64Binary",
    "date",
    "dateTime",
    "instant",
    "time",
    "xhtml",
    "integer64",
];

fn choice_type(suffix: &str) -> Option<&'static str> {
    CHOICE_TYPES
        .iter()
        .find(|(s, _)| *s == suffix)
        .map(|(_, t)| *t)
}

fn push_json<'a>(v: &'a Value, ty: Option<&'static str>, out: &mut Vec<Item<'a>>) {
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for x in items {
                if !x.is_null() {
                    out.push(Item::Node(x, ty));
                }
            }
        }
        _ => out.push(Item::Node(v, ty)),
    }
}

fn member<'a>(item: &Item<'a>, name: &str, out: &mut Vec<Item<'a>>) {
    let Item::Node(Value::Object(m), _) = item else {
        return;
    };
    if let Some(x) = m.get(name) {
        push_json(x, None, out);
        return;
    }
    if name.starts_with(|c: char| c.is_ascii_uppercase())
        && m.get("resourceType").and_then(Value::as_str) == Some(name)
    {
        out.push(item.clone());
        return;
    }
    for (k, x) in m {
        if let Some(t) = k.strip_prefix(name).and_then(choice_type) {
            push_json(x, Some(t), out);
        }
    }
}

/// The names of the `%variables` an expression uses.
pub fn referenced_variables(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::Env(n) => {
            out.insert(n.clone());
        }
        Expr::Member(b, _) | Expr::Unary(_, b) | Expr::TypeOp(_, b, _) => {
            referenced_variables(b, out)
        }
        Expr::Call(b, _, args) => {
            referenced_variables(b, out);
            for a in args {
                referenced_variables(a, out);
            }
        }
        Expr::Index(a, b) | Expr::Binary(_, a, b) => {
            referenced_variables(a, out);
            referenced_variables(b, out);
        }
        _ => {}
    }
}

fn err(msg: impl Into<String>) -> PathError {
    PathError::Eval(msg.into())
}

/// A primitive reading of an item, for comparisons and arithmetic.
enum Prim<'x> {
    B(bool),
    I(i64),
    D(f64),
    S(&'x str),
    Other(&'x Value),
}

impl<'a> Item<'a> {
    fn prim(&self) -> Prim<'_> {
        match self {
            Item::Bool(b) => Prim::B(*b),
            Item::Int(i) => Prim::I(*i),
            Item::Dec(d) => Prim::D(*d),
            Item::Str(s, _) => Prim::S(s),
            Item::Node(v, _) => match v {
                Value::Bool(b) => Prim::B(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => Prim::I(i),
                    None => Prim::D(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => Prim::S(s),
                other => Prim::Other(other),
            },
        }
    }

    /// The item as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self.prim() {
            Prim::S(s) => Some(s),
            _ => None,
        }
    }

    /// The FHIR type this item is known to have, if any.
    pub fn type_hint(&self) -> Option<&'static str> {
        match self {
            Item::Node(_, t) | Item::Str(_, t) => *t,
            _ => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self.prim() {
            Prim::B(b) => Some(b),
            _ => None,
        }
    }

    fn is_type(&self, wanted: &str) -> bool {
        let wanted = wanted
            .strip_prefix("FHIR.")
            .or_else(|| wanted.strip_prefix("System."))
            .unwrap_or(wanted);
        let wanted = match wanted {
            "String" => "string",
            "Integer" => "integer",
            "Boolean" => "boolean",
            "Decimal" => "decimal",
            "Date" => "date",
            "DateTime" => "dateTime",
            "Time" => "time",
            w => w,
        };
        if let Some(t) = self.type_hint() {
            let mut t = t;
            loop {
                if t == wanted {
                    return true;
                }
                match parent_type(t) {
                    Some(p) => t = p,
                    None => return false,
                }
            }
        }
        match self {
            Item::Bool(_) => wanted == "boolean",
            Item::Int(_) => wanted == "integer",
            Item::Dec(_) => wanted == "decimal",
            Item::Str(..) => STRING_TYPES.contains(&wanted),
            Item::Node(v, _) => match v {
                Value::Bool(_) => wanted == "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => matches!(
                    wanted,
                    "integer" | "decimal" | "positiveInt" | "unsignedInt" | "integer64"
                ),
                Value::Number(_) => wanted == "decimal",
                Value::String(_) => STRING_TYPES.contains(&wanted),
                Value::Object(m) => match m.get("resourceType").and_then(Value::as_str) {
                    Some(rt) => rt == wanted || wanted == "Resource" || wanted == "DomainResource",
                    None => wanted.starts_with(|c: char| c.is_ascii_uppercase()),
                },
                _ => false,
            },
        }
    }
}

fn equal(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (a.prim(), b.prim()) {
        (Prim::B(x), Prim::B(y)) => x == y,
        (Prim::I(x), Prim::I(y)) => x == y,
        (Prim::I(x), Prim::D(y)) | (Prim::D(y), Prim::I(x)) => (x as f64) == y,
        (Prim::D(x), Prim::D(y)) => x == y,
        (Prim::S(x), Prim::S(y)) => x == y,
        (Prim::Other(x), Prim::Other(y)) => x == y,
        _ => false,
    }
}

fn equivalent(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (a.prim(), b.prim()) {
        (Prim::S(x), Prim::S(y)) => {
            let norm = |s: &str| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            };
            norm(x) == norm(y)
        }
        _ => equal(a, b),
    }
}

fn compare(a: &Item<'_>, b: &Item<'_>) -> Option<Ordering> {
    match (a.prim(), b.prim()) {
        (Prim::I(x), Prim::I(y)) => Some(x.cmp(&y)),
        (Prim::I(x), Prim::D(y)) => (x as f64).partial_cmp(&y),
        (Prim::D(x), Prim::I(y)) => x.partial_cmp(&(y as f64)),
        (Prim::D(x), Prim::D(y)) => x.partial_cmp(&y),
        (Prim::S(x), Prim::S(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// The boolean a collection stands for: empty is unknown, one boolean is itself, one other
/// item is `true` (FHIRPath's singleton evaluation); more than one item is an error.
fn to_bool(c: &[Item<'_>]) -> Result<Option<bool>, PathError> {
    match c {
        [] => Ok(None),
        [one] => Ok(Some(one.as_bool().unwrap_or(true))),
        _ => Err(err(format!(
            "a boolean was expected, found a collection of {} items",
            c.len()
        ))),
    }
}

fn singleton<'x, 'a>(c: &'x [Item<'a>], what: &str) -> Result<Option<&'x Item<'a>>, PathError> {
    match c {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(err(format!(
            "{what} expects one item, found a collection of {}",
            c.len()
        ))),
    }
}

fn boolean<'a>(b: Option<bool>) -> Vec<Item<'a>> {
    b.map(Item::Bool).into_iter().collect()
}

/// The type name a function argument spells (`Quantity`, `FHIR.Quantity`).
fn type_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Member(base, name) => match base.as_ref() {
            Expr::This => Some(name.clone()),
            other => type_name(other).map(|b| format!("{b}.{name}")),
        },
        Expr::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn arity(name: &str, args: &[Expr], min: usize, max: usize) -> Result<(), PathError> {
    if args.len() < min || args.len() > max {
        return Err(err(format!(
            "{name}() takes {} arguments, found {}",
            if min == max {
                min.to_string()
            } else {
                format!("{min} to {max}")
            },
            args.len()
        )));
    }
    Ok(())
}

/// Evaluates `e` with the collection `focus` as its input.
pub fn evaluate<'a>(
    e: &Expr,
    focus: &[Item<'a>],
    env: &Env<'a, '_>,
) -> Result<Vec<Item<'a>>, PathError> {
    Ok(match e {
        Expr::This => focus.to_vec(),
        Expr::Empty => Vec::new(),
        Expr::Str(s) => vec![Item::Str(s.clone(), None)],
        Expr::Int(i) => vec![Item::Int(*i)],
        Expr::Dec(d) => vec![Item::Dec(*d)],
        Expr::Bool(b) => vec![Item::Bool(*b)],
        Expr::DateTime(s) => {
            let ty = if s.contains('T') { "dateTime" } else { "date" };
            vec![Item::Str(s.clone(), Some(ty))]
        }
        Expr::Time(s) => vec![Item::Str(s.clone(), Some("time"))],
        Expr::Env(name) => match name.as_str() {
            "rowIndex" => vec![Item::Int(env.row_index)],
            "resource" | "rootResource" | "context" => vec![Item::Node(env.resource, None)],
            other => match env.constants.get(other) {
                Some(v) => vec![v.clone()],
                None => return Err(err(format!("%{other} is not a constant of the view"))),
            },
        },
        Expr::Member(base, name) => {
            let input = evaluate(base, focus, env)?;
            let mut out = Vec::new();
            for item in &input {
                member(item, name, &mut out);
            }
            out
        }
        Expr::Index(base, idx) => {
            let input = evaluate(base, focus, env)?;
            let i = evaluate(idx, focus, env)?;
            match singleton(&i, "an index")?.map(Item::prim) {
                None => Vec::new(),
                Some(Prim::I(i)) => usize::try_from(i)
                    .ok()
                    .and_then(|i| input.get(i).cloned())
                    .into_iter()
                    .collect(),
                Some(_) => return Err(err("an index must be an integer")),
            }
        }
        Expr::Unary(_, inner) => {
            let v = evaluate(inner, focus, env)?;
            match singleton(&v, "unary minus")?.map(Item::prim) {
                None => Vec::new(),
                Some(Prim::I(i)) => i.checked_neg().map(Item::Int).into_iter().collect(),
                Some(Prim::D(d)) => vec![Item::Dec(-d)],
                Some(_) => return Err(err("unary minus needs a number")),
            }
        }
        Expr::TypeOp(is, inner, ty) => {
            let v = evaluate(inner, focus, env)?;
            type_op(*is, &v, ty)?
        }
        Expr::Binary(op, a, b) => binary(*op, a, b, focus, env)?,
        Expr::Call(base, name, args) => {
            let input = evaluate(base, focus, env)?;
            call(name, &input, args, focus, env)?
        }
    })
}

fn type_op<'a>(is: bool, v: &[Item<'a>], ty: &str) -> Result<Vec<Item<'a>>, PathError> {
    let Some(one) = singleton(v, if is { "is" } else { "as" })? else {
        return Ok(Vec::new());
    };
    let matches = one.is_type(ty);
    Ok(if is {
        vec![Item::Bool(matches)]
    } else if matches {
        vec![one.clone()]
    } else {
        Vec::new()
    })
}

fn binary<'a>(
    op: BinOp,
    a: &Expr,
    b: &Expr,
    focus: &[Item<'a>],
    env: &Env<'a, '_>,
) -> Result<Vec<Item<'a>>, PathError> {
    let l = evaluate(a, focus, env)?;
    let r = evaluate(b, focus, env)?;
    use BinOp::*;
    Ok(match op {
        And | Or | Xor | Implies => {
            let (x, y) = (to_bool(&l)?, to_bool(&r)?);
            boolean(match op {
                And => match (x, y) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                Or => match (x, y) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                Xor => match (x, y) {
                    (Some(p), Some(q)) => Some(p != q),
                    _ => None,
                },
                _ => match (x, y) {
                    (Some(false), _) | (_, Some(true)) => Some(true),
                    (Some(true), Some(false)) => Some(false),
                    _ => None,
                },
            })
        }
        Eq | Ne => {
            if l.is_empty() || r.is_empty() {
                Vec::new()
            } else {
                let same = l.len() == r.len() && l.iter().zip(&r).all(|(x, y)| equal(x, y));
                vec![Item::Bool(same == (op == Eq))]
            }
        }
        Equiv | NotEquiv => {
            let same = l.len() == r.len() && l.iter().all(|x| r.iter().any(|y| equivalent(x, y)));
            vec![Item::Bool(same == (op == Equiv))]
        }
        Lt | Le | Gt | Ge => {
            let (Some(x), Some(y)) = (
                singleton(&l, "a comparison")?,
                singleton(&r, "a comparison")?,
            ) else {
                return Ok(Vec::new());
            };
            match compare(x, y) {
                None => Vec::new(),
                Some(o) => vec![Item::Bool(match op {
                    Lt => o == Ordering::Less,
                    Le => o != Ordering::Greater,
                    Gt => o == Ordering::Greater,
                    _ => o != Ordering::Less,
                })],
            }
        }
        Union => union(l, r),
        In | Contains => {
            let (needle, hay) = if op == In { (&l, &r) } else { (&r, &l) };
            match singleton(needle, "a membership test")? {
                None => Vec::new(),
                Some(n) => vec![Item::Bool(hay.iter().any(|h| equal(n, h)))],
            }
        }
        Concat => {
            let text = |c: &[Item<'_>]| -> Result<String, PathError> {
                Ok(singleton(c, "&")?
                    .and_then(|i| i.as_str().map(str::to_string))
                    .unwrap_or_default())
            };
            vec![Item::Str(text(&l)? + &text(&r)?, None)]
        }
        Add | Sub | Mul | Div | IntDiv | Mod => {
            let (Some(x), Some(y)) = (singleton(&l, "arithmetic")?, singleton(&r, "arithmetic")?)
            else {
                return Ok(Vec::new());
            };
            arithmetic(op, x, y)?.into_iter().collect()
        }
    })
}

fn union<'a>(l: Vec<Item<'a>>, r: Vec<Item<'a>>) -> Vec<Item<'a>> {
    let mut out: Vec<Item<'a>> = Vec::with_capacity(l.len() + r.len());
    for item in l.into_iter().chain(r) {
        if !out.iter().any(|o| equal(o, &item)) {
            out.push(item);
        }
    }
    out
}

fn arithmetic<'a>(op: BinOp, x: &Item<'a>, y: &Item<'a>) -> Result<Option<Item<'a>>, PathError> {
    use BinOp::*;
    let as_f = |p: &Prim<'_>| match p {
        Prim::I(i) => Some(*i as f64),
        Prim::D(d) => Some(*d),
        _ => None,
    };
    let (px, py) = (x.prim(), y.prim());
    if let (Prim::S(a), Prim::S(b), Add) = (&px, &py, op) {
        return Ok(Some(Item::Str(format!("{a}{b}"), None)));
    }
    if let (Prim::I(a), Prim::I(b)) = (&px, &py) {
        let (a, b) = (*a, *b);
        let r = match op {
            Add => a.checked_add(b),
            Sub => a.checked_sub(b),
            Mul => a.checked_mul(b),
            IntDiv => a.checked_div(b),
            Mod => a.checked_rem(b),
            _ => {
                return Ok((b != 0).then(|| Item::Dec(a as f64 / b as f64)));
            }
        };
        return Ok(r.map(Item::Int));
    }
    let (Some(a), Some(b)) = (as_f(&px), as_f(&py)) else {
        return Err(err("arithmetic needs two numbers (or two strings for +)"));
    };
    let r = match op {
        Add => a + b,
        Sub => a - b,
        Mul => a * b,
        Div | IntDiv | Mod if b == 0.0 => return Ok(None),
        Div => a / b,
        IntDiv => return Ok(Some(Item::Int((a / b).trunc() as i64))),
        _ => a % b,
    };
    Ok(r.is_finite().then_some(Item::Dec(r)))
}

fn string_arg(
    name: &str,
    args: &[Expr],
    i: usize,
    focus: &[Item<'_>],
    env: &Env<'_, '_>,
) -> Result<Option<String>, PathError> {
    let Some(a) = args.get(i) else {
        return Ok(None);
    };
    let v = evaluate(a, focus, env)?;
    match singleton(&v, name)? {
        None => Ok(None),
        Some(item) => match item.as_str() {
            Some(s) => Ok(Some(s.to_string())),
            None => Err(err(format!("{name}() takes a string argument"))),
        },
    }
}

fn int_arg(
    name: &str,
    args: &[Expr],
    focus: &[Item<'_>],
    env: &Env<'_, '_>,
) -> Result<usize, PathError> {
    let v = evaluate(&args[0], focus, env)?;
    match singleton(&v, name)?.map(Item::prim) {
        Some(Prim::I(i)) => Ok(usize::try_from(i).unwrap_or(0)),
        _ => Err(err(format!("{name}() takes an integer argument"))),
    }
}

fn string_fn<'a>(
    input: &[Item<'a>],
    f: impl Fn(&str) -> Item<'a>,
) -> Result<Vec<Item<'a>>, PathError> {
    Ok(singleton(input, "a string function")?
        .and_then(|i| i.as_str().map(&f))
        .into_iter()
        .collect())
}

fn call<'a>(
    name: &str,
    input: &[Item<'a>],
    args: &[Expr],
    focus: &[Item<'a>],
    env: &Env<'a, '_>,
) -> Result<Vec<Item<'a>>, PathError> {
    Ok(match name {
        "where" | "exists" | "all" | "select" if !args.is_empty() => {
            arity(name, args, 1, 1)?;
            let mut out = Vec::new();
            let mut all = true;
            for item in input {
                let r = evaluate(&args[0], std::slice::from_ref(item), env)?;
                if name == "select" {
                    out.extend(r);
                    continue;
                }
                let keep = to_bool(&r)? == Some(true);
                all &= keep;
                if keep {
                    out.push(item.clone());
                }
            }
            match name {
                "exists" => vec![Item::Bool(!out.is_empty())],
                "all" => vec![Item::Bool(all)],
                _ => out,
            }
        }
        "exists" => vec![Item::Bool(!input.is_empty())],
        "all" => vec![Item::Bool(true)],
        "empty" => {
            arity(name, args, 0, 0)?;
            vec![Item::Bool(input.is_empty())]
        }
        "count" => vec![Item::Int(input.len() as i64)],
        "first" => input.first().cloned().into_iter().collect(),
        "last" => input.last().cloned().into_iter().collect(),
        "tail" => input.iter().skip(1).cloned().collect(),
        "skip" => {
            arity(name, args, 1, 1)?;
            let n = int_arg(name, args, focus, env)?;
            input.iter().skip(n).cloned().collect()
        }
        "take" => {
            arity(name, args, 1, 1)?;
            let n = int_arg(name, args, focus, env)?;
            input.iter().take(n).cloned().collect()
        }
        "single" => singleton(input, "single()")?.cloned().into_iter().collect(),
        "distinct" => union(input.to_vec(), Vec::new()),
        "not" => boolean(to_bool(input)?.map(|b| !b)),
        "allTrue" => vec![Item::Bool(input.iter().all(|i| i.as_bool() == Some(true)))],
        "anyTrue" => vec![Item::Bool(input.iter().any(|i| i.as_bool() == Some(true)))],
        "hasValue" => vec![Item::Bool(matches!(
            input,
            [Item::Node(v, _)] if !v.is_object() && !v.is_array()
        ))],
        "iif" => {
            arity(name, args, 2, 3)?;
            let c = evaluate(&args[0], input, env)?;
            if to_bool(&c)? == Some(true) {
                evaluate(&args[1], input, env)?
            } else if let Some(e) = args.get(2) {
                evaluate(e, input, env)?
            } else {
                Vec::new()
            }
        }
        "combine" | "union" => {
            arity(name, args, 1, 1)?;
            let other = evaluate(&args[0], focus, env)?;
            if name == "union" {
                union(input.to_vec(), other)
            } else {
                input.iter().cloned().chain(other).collect()
            }
        }
        "join" => {
            arity(name, args, 0, 1)?;
            let sep = string_arg(name, args, 0, focus, env)?.unwrap_or_default();
            let mut parts = Vec::with_capacity(input.len());
            for item in input {
                match item.as_str() {
                    Some(s) => parts.push(s.to_string()),
                    None => return Err(err("join() needs a collection of strings")),
                }
            }
            vec![Item::Str(parts.join(&sep), None)]
        }
        "ofType" | "is" | "as" => {
            arity(name, args, 1, 1)?;
            let ty =
                type_name(&args[0]).ok_or_else(|| err(format!("{name}() takes a type name")))?;
            if name == "ofType" {
                input.iter().filter(|i| i.is_type(&ty)).cloned().collect()
            } else {
                type_op(name == "is", input, &ty)?
            }
        }
        "extension" => {
            arity(name, args, 1, 1)?;
            let url = string_arg(name, args, 0, focus, env)?
                .ok_or_else(|| err("extension() takes the extension's url"))?;
            let mut out = Vec::new();
            for item in input {
                let mut exts = Vec::new();
                member(item, "extension", &mut exts);
                for e in exts {
                    if let Item::Node(v, _) = e
                        && v.get("url").and_then(Value::as_str) == Some(url.as_str())
                    {
                        out.push(e);
                    }
                }
            }
            out
        }
        "getResourceKey" => {
            arity(name, args, 0, 0)?;
            input
                .iter()
                .filter_map(|i| match i {
                    Item::Node(v @ Value::Object(m), _) if m.contains_key("resourceType") => v
                        .get("id")
                        .and_then(Value::as_str)
                        .map(|id| Item::Str(id.to_string(), Some("string"))),
                    _ => None,
                })
                .collect()
        }
        "getReferenceKey" => {
            arity(name, args, 0, 1)?;
            let wanted = match args.first() {
                Some(a) => Some(
                    type_name(a)
                        .ok_or_else(|| err("getReferenceKey() takes a resource type name"))?,
                ),
                None => None,
            };
            input
                .iter()
                .filter_map(|i| {
                    let Item::Node(v, _) = i else { return None };
                    let r = v.get("reference")?.as_str()?;
                    let (ty, id) = reference_key(r)?;
                    match (&wanted, ty) {
                        (None, _) => Some(Item::Str(id.to_string(), Some("string"))),
                        (Some(w), Some(t)) if w.strip_prefix("FHIR.").unwrap_or(w) == t => {
                            Some(Item::Str(id.to_string(), Some("string")))
                        }
                        _ => None,
                    }
                })
                .collect()
        }
        "lowBoundary" | "highBoundary" => {
            arity(name, args, 0, 1)?;
            match singleton(input, name)? {
                None => Vec::new(),
                Some(item) => boundary(item, name == "highBoundary").into_iter().collect(),
            }
        }
        "toString" => match singleton(input, name)? {
            None => Vec::new(),
            Some(item) => match item.prim() {
                Prim::S(s) => vec![Item::Str(s.to_string(), None)],
                Prim::B(b) => vec![Item::Str(b.to_string(), None)],
                Prim::I(i) => vec![Item::Str(i.to_string(), None)],
                Prim::D(d) => vec![Item::Str(d.to_string(), None)],
                Prim::Other(_) => Vec::new(),
            },
        },
        "lower" => string_fn(input, |s| Item::Str(s.to_lowercase(), None))?,
        "upper" => string_fn(input, |s| Item::Str(s.to_uppercase(), None))?,
        "trim" => string_fn(input, |s| Item::Str(s.trim().to_string(), None))?,
        "length" => string_fn(input, |s| Item::Int(s.chars().count() as i64))?,
        "contains" | "startsWith" | "endsWith" => {
            arity(name, args, 1, 1)?;
            let Some(needle) = string_arg(name, args, 0, focus, env)? else {
                return Ok(Vec::new());
            };
            string_fn(input, |s| {
                Item::Bool(match name {
                    "contains" => s.contains(needle.as_str()),
                    "startsWith" => s.starts_with(needle.as_str()),
                    _ => s.ends_with(needle.as_str()),
                })
            })?
        }
        other => return Err(err(format!("{other}() is not a supported function"))),
    })
}

/// The type (when the reference names one) and the logical id a reference points at:
/// `Patient/p1`, `https://host/fhir/Patient/p1/_history/2`, `urn:uuid:...`.
pub(crate) fn reference_key(r: &str) -> Option<(Option<&str>, &str)> {
    if r.starts_with('#') {
        return None;
    }
    if let Some(uuid) = r
        .strip_prefix("urn:uuid:")
        .or_else(|| r.strip_prefix("urn:oid:"))
    {
        return (!uuid.is_empty()).then_some((None, uuid));
    }
    let path = r.split(['?', '#']).next().unwrap_or(r);
    let path = match path.find("/_history/") {
        Some(p) => &path[..p],
        None => path,
    };
    let mut segs = path.rsplit('/');
    let id = segs.next().filter(|s| !s.is_empty())?;
    let ty = segs
        .next()
        .filter(|t| t.starts_with(|c: char| c.is_ascii_uppercase()));
    Some((ty, id))
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use serde_json::json;

    fn eval_on(path: &str, resource: &Value) -> Result<Vec<Value>, PathError> {
        let constants = HashMap::new();
        let env = Env {
            resource,
            constants: &constants,
            row_index: 0,
        };
        let e = parse(path)?;
        let out = evaluate(&e, &[Item::Node(resource, None)], &env)?;
        Ok(out
            .into_iter()
            .map(|i| match i {
                Item::Node(v, _) => v.clone(),
                Item::Bool(b) => json!(b),
                Item::Int(i) => json!(i),
                Item::Dec(d) => json!(d),
                Item::Str(s, _) => json!(s),
            })
            .collect())
    }

    #[test]
    fn choice_elements_are_found_by_their_type_suffix() {
        let obs = json!({"resourceType": "Observation", "valueQuantity": {"value": 5.4, "unit": "mg"},
                         "status": "final", "statusReason": {"text": "x"}});
        assert_eq!(
            eval_on("value.ofType(Quantity).value", &obs).unwrap(),
            vec![json!(5.4)]
        );
        assert_eq!(
            eval_on("value.ofType(string)", &obs).unwrap(),
            Vec::<Value>::new()
        );
        assert_eq!(
            eval_on("Observation.status", &obs).unwrap(),
            vec![json!("final")]
        );
        assert_eq!(eval_on("value.unit", &obs).unwrap(), vec![json!("mg")]);
    }

    #[test]
    fn reference_keys_take_the_last_type_and_id() {
        assert_eq!(reference_key("Patient/p1"), Some((Some("Patient"), "p1")));
        assert_eq!(
            reference_key("https://h/fhir/Patient/p1/_history/3"),
            Some((Some("Patient"), "p1"))
        );
        assert_eq!(reference_key("urn:uuid:abc"), Some((None, "abc")));
        assert_eq!(reference_key("#contained"), None);
    }

    #[test]
    fn three_valued_logic_and_arithmetic() {
        let p = json!({"resourceType": "Patient", "active": true});
        assert_eq!(
            eval_on("active and deceased", &p).unwrap(),
            Vec::<Value>::new()
        );
        assert_eq!(
            eval_on("active or deceased", &p).unwrap(),
            vec![json!(true)]
        );
        assert_eq!(eval_on("3 / 2", &p).unwrap(), vec![json!(1.5)]);
        assert_eq!(eval_on("7 div 2 + 7 mod 2", &p).unwrap(), vec![json!(4)]);
        assert_eq!(eval_on("1 / 0", &p).unwrap(), Vec::<Value>::new());
        assert!(eval_on("nosuch()", &p).is_err());
    }
}
