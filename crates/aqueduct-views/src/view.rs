//! A `ViewDefinition` checked and compiled ([`View::compile`]), and run over one resource at a
//! time ([`View::rows`]).
//!
//! The rules are those of SQL on FHIR v2: a view names one `resource` type; `select`s nest;
//! each has `column`s, and at most one of `forEach`, `forEachOrNull` or `repeat`; `unionAll`
//! branches must have the same column names in the same order; column names are unique and
//! match `^[A-Za-z][A-Za-z0-9_]*$`; a column that is not `collection: true` must yield at most
//! one value; a `where` path must yield a boolean (or nothing); `%name` must be a constant of
//! the view. The columns of a select come first, then those of its nested selects, then those
//! of its `unionAll`.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::ViewError;
use crate::cell::{Cell, ColumnKind};
use crate::fhirpath::{self, Env, Expr, Item};

/// One column of a view's schema, as the ViewDefinition declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// The FHIR type the definition gives (`string`, `dateTime`, `integer`...), if any.
    pub fhir_type: Option<String>,
    /// `collection: true`: the cell is a list of every value the path yields.
    pub collection: bool,
    pub description: Option<String>,
}

impl Column {
    /// How the column is stored in a table (see [`ColumnKind`]).
    pub fn kind(&self) -> ColumnKind {
        ColumnKind::of(self.fhir_type.as_deref())
    }
}

/// A row: one cell per column of [`View::columns`], in order.
pub type Row = Vec<Cell>;

#[derive(Debug)]
struct ColumnExpr {
    index: usize,
    path: Expr,
    collection: bool,
    kind: Option<ColumnKind>,
}

#[derive(Debug)]
enum Iteration {
    None,
    ForEach(Expr),
    ForEachOrNull(Expr),
    Repeat(Vec<Expr>),
}

#[derive(Debug)]
struct Select {
    iteration: Iteration,
    columns: Vec<ColumnExpr>,
    selects: Vec<Select>,
    union_all: Vec<Select>,
    /// The column indexes this select fills, its own first, then nested, then union.
    width: Vec<usize>,
}

/// A compiled ViewDefinition.
#[derive(Debug)]
pub struct View {
    name: Option<String>,
    resource: String,
    constants: HashMap<String, Item<'static>>,
    wheres: Vec<(String, Expr)>,
    root: Select,
    columns: Vec<Column>,
}

const ENV_VARIABLES: [&str; 4] = ["rowIndex", "resource", "rootResource", "context"];
/// Nodes a `repeat` may visit for one resource before the view gives up on it.
const MAX_REPEAT_NODES: usize = 100_000;
/// Rows one resource may produce before the view gives up on it.
const MAX_ROWS: usize = 1_000_000;

fn invalid(at: &str, message: impl std::fmt::Display) -> ViewError {
    ViewError::Invalid {
        at: at.to_string(),
        message: message.to_string(),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Compiler<'v> {
    constants: &'v HashMap<String, Item<'static>>,
    columns: Vec<Column>,
    names: BTreeSet<String>,
}

impl Compiler<'_> {
    fn path(&self, at: &str, text: &Value) -> Result<Expr, ViewError> {
        let Some(text) = text.as_str() else {
            return Err(invalid(at, "must be a FHIRPath expression (a string)"));
        };
        let expr = fhirpath::parse(text).map_err(|source| ViewError::Path {
            at: at.to_string(),
            source,
        })?;
        let mut vars = BTreeSet::new();
        fhirpath::referenced_variables(&expr, &mut vars);
        for v in vars {
            if !self.constants.contains_key(&v) && !ENV_VARIABLES.contains(&v.as_str()) {
                return Err(invalid(
                    at,
                    format!("`%{v}` is not a constant of the view (in `{text}`)"),
                ));
            }
        }
        Ok(expr)
    }

    fn select(&mut self, at: &str, v: &Value) -> Result<Select, ViewError> {
        let Some(obj) = v.as_object() else {
            return Err(invalid(at, "a select must be an object"));
        };
        let iteration = self.iteration(at, obj)?;
        let mut columns = Vec::new();
        let mut width = Vec::new();
        for (i, c) in array(at, obj, "column")?.iter().enumerate() {
            let cat = format!("{at}.column[{i}]");
            let col = self.column(&cat, c)?;
            width.push(col.index);
            columns.push(col);
        }
        let mut selects = Vec::new();
        for (i, s) in array(at, obj, "select")?.iter().enumerate() {
            let sel = self.select(&format!("{at}.select[{i}]"), s)?;
            width.extend(&sel.width);
            selects.push(sel);
        }
        let mut union_all = Vec::new();
        let branches = array(at, obj, "unionAll")?;
        if let Some(first) = branches.first() {
            let first_at = format!("{at}.unionAll[0]");
            let first = self.select(&first_at, first)?;
            let names: Vec<(String, Option<String>)> = first
                .width
                .iter()
                .map(|&i| {
                    let c = &self.columns[i];
                    (c.name.clone(), c.fhir_type.clone())
                })
                .collect();
            width.extend(&first.width);
            let first_width = first.width.clone();
            union_all.push(first);
            for (i, b) in branches.iter().enumerate().skip(1) {
                let bat = format!("{at}.unionAll[{i}]");
                // a branch's columns repeat the first branch's: compile them apart, then
                // check and map them onto the first branch's indexes
                let mut sub = Compiler {
                    constants: self.constants,
                    columns: Vec::new(),
                    names: BTreeSet::new(),
                };
                let mut sel = sub.select(&bat, b)?;
                let theirs: Vec<(String, Option<String>)> = sub
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.fhir_type.clone()))
                    .collect();
                let same = theirs.len() == names.len()
                    && theirs
                        .iter()
                        .zip(&names)
                        .all(|((n, t), (m, u))| n == m && (t.is_none() || u.is_none() || t == u));
                if !same {
                    let list = |v: &[(String, Option<String>)]| {
                        v.iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(invalid(
                        &bat,
                        format!(
                            "the branches of a unionAll must have the same columns in the same \
                             order: ({}) against ({})",
                            list(&names),
                            list(&theirs)
                        ),
                    ));
                }
                remap(&mut sel, &first_width);
                union_all.push(sel);
            }
        }
        Ok(Select {
            iteration,
            columns,
            selects,
            union_all,
            width,
        })
    }

    fn iteration(&self, at: &str, obj: &Map<String, Value>) -> Result<Iteration, ViewError> {
        let for_each = obj.get("forEach");
        let or_null = obj.get("forEachOrNull");
        let repeat = obj.get("repeat");
        if [for_each, or_null, repeat].iter().flatten().count() > 1 {
            return Err(invalid(
                at,
                "a select may have only one of forEach, forEachOrNull and repeat",
            ));
        }
        Ok(if let Some(p) = for_each {
            Iteration::ForEach(self.path(&format!("{at}.forEach"), p)?)
        } else if let Some(p) = or_null {
            Iteration::ForEachOrNull(self.path(&format!("{at}.forEachOrNull"), p)?)
        } else if let Some(r) = repeat {
            let Some(paths) = r.as_array().filter(|a| !a.is_empty()) else {
                return Err(invalid(
                    &format!("{at}.repeat"),
                    "must be a non-empty list of paths",
                ));
            };
            let mut exprs = Vec::new();
            for (i, p) in paths.iter().enumerate() {
                exprs.push(self.path(&format!("{at}.repeat[{i}]"), p)?);
            }
            Iteration::Repeat(exprs)
        } else {
            Iteration::None
        })
    }

    fn column(&mut self, at: &str, v: &Value) -> Result<ColumnExpr, ViewError> {
        let Some(obj) = v.as_object() else {
            return Err(invalid(at, "a column must be an object"));
        };
        let Some(name) = obj.get("name").and_then(Value::as_str) else {
            return Err(invalid(at, "a column needs a `name` (a string)"));
        };
        if !valid_name(name) {
            return Err(invalid(
                at,
                format!("column name `{name}` must match ^[A-Za-z][A-Za-z0-9_]*$"),
            ));
        }
        if !self.names.insert(name.to_string()) {
            return Err(invalid(at, format!("column name `{name}` is used twice")));
        }
        let Some(path) = obj.get("path") else {
            return Err(invalid(at, format!("column `{name}` needs a `path`")));
        };
        let path = self.path(&format!("{at}.path"), path)?;
        let fhir_type = match obj.get("type") {
            None => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(invalid(at, "a column's `type` must be a string")),
        };
        let collection = match obj.get("collection") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid(at, "a column's `collection` must be true or false")),
        };
        let description = obj
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string);
        let kind = fhir_type.as_deref().map(|t| ColumnKind::of(Some(t)));
        let index = self.columns.len();
        self.columns.push(Column {
            name: name.to_string(),
            fhir_type,
            collection,
            description,
        });
        Ok(ColumnExpr {
            index,
            path,
            collection,
            kind,
        })
    }
}

/// Moves the column indexes of a later unionAll branch (compiled on its own, from 0) onto
/// those of the first branch.
fn remap(sel: &mut Select, onto: &[usize]) {
    for c in &mut sel.columns {
        c.index = onto[c.index];
    }
    for w in &mut sel.width {
        *w = onto[*w];
    }
    for s in sel.selects.iter_mut().chain(sel.union_all.iter_mut()) {
        remap(s, onto);
    }
}

fn array<'v>(at: &str, obj: &'v Map<String, Value>, key: &str) -> Result<&'v [Value], ViewError> {
    match obj.get(key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(invalid(&format!("{at}.{key}"), "must be a list")),
    }
}

fn constant(at: &str, v: &Value) -> Result<(String, Item<'static>), ViewError> {
    let Some(obj) = v.as_object() else {
        return Err(invalid(at, "a constant must be an object"));
    };
    let Some(name) = obj.get("name").and_then(Value::as_str) else {
        return Err(invalid(at, "a constant needs a `name`"));
    };
    if !valid_name(name) {
        return Err(invalid(
            at,
            format!("constant name `{name}` is not a valid name"),
        ));
    }
    let values: Vec<(&String, &Value)> =
        obj.iter().filter(|(k, _)| k.starts_with("value")).collect();
    let [(key, value)] = values.as_slice() else {
        return Err(invalid(
            at,
            format!("constant `{name}` needs exactly one value[x]"),
        ));
    };
    let suffix = &key["value".len()..];
    let bad = || {
        invalid(
            at,
            format!("constant `{name}`: {key} has the wrong JSON type"),
        )
    };
    let item = match suffix {
        "Boolean" => Item::Bool(value.as_bool().ok_or_else(bad)?),
        "Integer" | "PositiveInt" | "UnsignedInt" | "Integer64" => {
            let i = match value {
                Value::Number(n) => n.as_i64(),
                Value::String(s) if suffix == "Integer64" => s.parse().ok(),
                _ => None,
            };
            Item::Int(i.ok_or_else(bad)?)
        }
        "Decimal" => Item::Dec(value.as_f64().ok_or_else(bad)?),
        s => {
            let ty = match s {
                "String" => "string",
                "Code" => "code",
                "Id" => "id",
                "Uri" => "uri",
                "Url" => "url",
                "Canonical" => "canonical",
                "Oid" => "oid",
                "Uuid" => "uuid",
                "Markdown" => "markdown",
                "Base64Binary" => "base64Binary",
                "Date" => "date",
                "DateTime" => "dateTime",
                "Instant" => "instant",
                "Time" => "time",
                _ => {
                    return Err(invalid(
                        at,
                        format!("constant `{name}`: {key} is not a primitive type"),
                    ));
                }
            };
            Item::Str(value.as_str().ok_or_else(bad)?.to_string(), Some(ty))
        }
    };
    Ok((name.to_string(), item))
}

impl View {
    /// Checks and compiles a ViewDefinition. Every rule the specification states for a valid
    /// definition is checked here, so a view that compiles fails on a resource only when the
    /// resource gives a column several values or a value of the wrong type.
    pub fn compile(definition: &Value) -> Result<View, ViewError> {
        let Some(obj) = definition.as_object() else {
            return Err(invalid("ViewDefinition", "must be a JSON object"));
        };
        if let Some(rt) = obj.get("resourceType").and_then(Value::as_str)
            && rt != "ViewDefinition"
        {
            return Err(invalid(
                "resourceType",
                format!("is `{rt}`, not `ViewDefinition`"),
            ));
        }
        let resource = match obj.get("resource") {
            Some(Value::String(r)) if valid_name(r) => r.clone(),
            Some(_) => return Err(invalid("resource", "must be a FHIR resource type name")),
            None => return Err(invalid("resource", "is missing: name the resource type")),
        };
        let name = obj.get("name").and_then(Value::as_str).map(str::to_string);
        let mut constants = HashMap::new();
        for (i, c) in array("ViewDefinition", obj, "constant")?.iter().enumerate() {
            let (n, item) = constant(&format!("constant[{i}]"), c)?;
            if constants.insert(n.clone(), item).is_some() {
                return Err(invalid(
                    &format!("constant[{i}]"),
                    format!("constant `{n}` is defined twice"),
                ));
            }
        }
        let selects = array("ViewDefinition", obj, "select")?;
        if selects.is_empty() {
            return Err(invalid(
                "select",
                "is missing: a view needs at least one select",
            ));
        }
        let mut compiler = Compiler {
            constants: &constants,
            columns: Vec::new(),
            names: BTreeSet::new(),
        };
        let mut root = Select {
            iteration: Iteration::None,
            columns: Vec::new(),
            selects: Vec::new(),
            union_all: Vec::new(),
            width: Vec::new(),
        };
        for (i, s) in selects.iter().enumerate() {
            let sel = compiler.select(&format!("select[{i}]"), s)?;
            root.width.extend(&sel.width);
            root.selects.push(sel);
        }
        let mut wheres = Vec::new();
        for (i, w) in array("ViewDefinition", obj, "where")?.iter().enumerate() {
            let at = format!("where[{i}]");
            let Some(p) = w.as_object().and_then(|o| o.get("path")) else {
                return Err(invalid(&at, "needs a `path`"));
            };
            let expr = compiler.path(&format!("{at}.path"), p)?;
            wheres.push((p.as_str().unwrap_or_default().to_string(), expr));
        }
        let columns = compiler.columns;
        Ok(View {
            name,
            resource,
            constants,
            wheres,
            root,
            columns,
        })
    }

    /// The view's `name`, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The resource type the view reads.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The view's columns, in the order of every row's cells.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The rows one resource gives: none when it is of another type or fails a `where`.
    pub fn rows(&self, resource: &Value) -> Result<Vec<Row>, ViewError> {
        let mut out = Vec::new();
        self.rows_into(resource, &mut out)?;
        Ok(out)
    }

    /// [`View::rows`], appending to `out` (a caller streaming many resources reuses it).
    pub fn rows_into(&self, resource: &Value, out: &mut Vec<Row>) -> Result<(), ViewError> {
        if resource.get("resourceType").and_then(Value::as_str) != Some(self.resource.as_str()) {
            return Ok(());
        }
        let root = [Item::Node(resource, None)];
        let env = Env {
            resource,
            constants: &self.constants,
            row_index: 0,
        };
        for (text, w) in &self.wheres {
            let r = fhirpath::evaluate(w, &root, &env).map_err(|source| ViewError::Eval {
                at: format!("where `{text}`"),
                source,
            })?;
            match r.as_slice() {
                [] => return Ok(()),
                [one] => match one {
                    Item::Bool(true) | Item::Node(Value::Bool(true), _) => {}
                    Item::Bool(false) | Item::Node(Value::Bool(false), _) => return Ok(()),
                    _ => return Err(ViewError::WhereNotBoolean { path: text.clone() }),
                },
                _ => return Err(ViewError::WhereNotBoolean { path: text.clone() }),
            }
        }
        let mut run = Run {
            view: self,
            resource,
            rows_made: 0,
        };
        let rows = run.select(&self.root, &root[0], 0)?;
        out.extend(rows);
        Ok(())
    }
}

struct Run<'v, 'a> {
    view: &'v View,
    resource: &'a Value,
    rows_made: usize,
}

impl<'a> Run<'_, 'a> {
    fn env(&self, row_index: i64) -> Env<'a, '_> {
        Env {
            resource: self.resource,
            constants: &self.view.constants,
            row_index,
        }
    }

    fn eval(
        &self,
        e: &Expr,
        focus: &[Item<'a>],
        row_index: i64,
    ) -> Result<Vec<Item<'a>>, ViewError> {
        fhirpath::evaluate(e, focus, &self.env(row_index)).map_err(|source| ViewError::Eval {
            at: "a path".to_string(),
            source,
        })
    }

    fn null_row(&self) -> Row {
        vec![Cell::Null; self.view.columns.len()]
    }

    fn select(
        &mut self,
        sel: &Select,
        focus: &Item<'a>,
        row_index: i64,
    ) -> Result<Vec<Row>, ViewError> {
        let foci: Vec<(Option<Item<'a>>, i64)> = match &sel.iteration {
            Iteration::None => vec![(Some(focus.clone()), row_index)],
            Iteration::ForEach(e) => self
                .eval(e, std::slice::from_ref(focus), row_index)?
                .into_iter()
                .enumerate()
                .map(|(i, f)| (Some(f), i as i64))
                .collect(),
            Iteration::ForEachOrNull(e) => {
                let items = self.eval(e, std::slice::from_ref(focus), row_index)?;
                if items.is_empty() {
                    vec![(None, 0)]
                } else {
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, f)| (Some(f), i as i64))
                        .collect()
                }
            }
            Iteration::Repeat(paths) => {
                let mut nodes = Vec::new();
                self.repeat(paths, focus, row_index, 0, &mut nodes)?;
                nodes
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| (Some(f), i as i64))
                    .collect()
            }
        };
        let mut rows = Vec::new();
        for (f, idx) in foci {
            let Some(f) = f else {
                // forEachOrNull over nothing: one row, its own columns read from an empty
                // focus (so `%rowIndex` is still 0), null in every nested one
                let mut row = self.null_row();
                for c in &sel.columns {
                    row[c.index] = self.cell(c, &[], idx)?;
                }
                rows.push(row);
                continue;
            };
            let mut own = self.null_row();
            for c in &sel.columns {
                own[c.index] = self.cell(c, std::slice::from_ref(&f), idx)?;
            }
            let mut partial = vec![own];
            for s in &sel.selects {
                let sub = self.select(s, &f, idx)?;
                partial = self.product(partial, &sub, &s.width)?;
            }
            if !sel.union_all.is_empty() {
                let mut branches = Vec::new();
                for b in &sel.union_all {
                    branches.extend(self.select(b, &f, idx)?);
                }
                let width = sel
                    .union_all
                    .first()
                    .map(|b| b.width.as_slice())
                    .unwrap_or(&[]);
                partial = self.product(partial, &branches, width)?;
            }
            rows.extend(partial);
        }
        Ok(rows)
    }

    /// Every row of `left` combined with every row of `right` (which fills `width`).
    fn product(
        &mut self,
        left: Vec<Row>,
        right: &[Row],
        width: &[usize],
    ) -> Result<Vec<Row>, ViewError> {
        let n = left.len().saturating_mul(right.len());
        self.rows_made = self.rows_made.saturating_add(n);
        if self.rows_made > MAX_ROWS {
            return Err(ViewError::TooManyRows { limit: MAX_ROWS });
        }
        let mut out = Vec::with_capacity(n);
        for l in &left {
            for r in right {
                let mut row = l.clone();
                for &i in width {
                    row[i] = r[i].clone();
                }
                out.push(row);
            }
        }
        Ok(out)
    }

    fn repeat(
        &self,
        paths: &[Expr],
        node: &Item<'a>,
        row_index: i64,
        depth: usize,
        out: &mut Vec<Item<'a>>,
    ) -> Result<(), ViewError> {
        if depth > 128 || out.len() > MAX_REPEAT_NODES {
            return Err(ViewError::TooManyRows {
                limit: MAX_REPEAT_NODES,
            });
        }
        for p in paths {
            for child in self.eval(p, std::slice::from_ref(node), row_index)? {
                if child == *node {
                    continue;
                }
                out.push(child.clone());
                self.repeat(paths, &child, row_index, depth + 1, out)?;
            }
        }
        Ok(())
    }

    fn cell(&self, c: &ColumnExpr, focus: &[Item<'a>], row_index: i64) -> Result<Cell, ViewError> {
        let items = self.eval(&c.path, focus, row_index)?;
        let name = &self.view.columns[c.index].name;
        if c.collection {
            let mut list = Vec::with_capacity(items.len());
            for i in &items {
                list.push(Cell::from_item(i, c.kind, name)?);
            }
            return Ok(Cell::List(list));
        }
        match items.as_slice() {
            [] => Ok(Cell::Null),
            [one] => Cell::from_item(one, c.kind, name),
            many => Err(ViewError::NotSingle {
                column: name.clone(),
                count: many.len(),
            }),
        }
    }
}
