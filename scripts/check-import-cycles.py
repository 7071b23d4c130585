#!/usr/bin/env python3
"""Checks that the top-level modules of a Rust crate do not import each other in a cycle.

Why: rustc accepts modules that use each other, so nothing stops them from growing into one
tangle in which no module can be read, tested or moved on its own. This check keeps the
crate's modules layered: CI fails on a cycle and names, for each edge of it, a file:line to
start from. With none, it prints the modules in dependency order (those depended on first).

Usage: scripts/check-import-cycles.py [SRC_DIR ...]   (default: engine/manager/src)
       scripts/check-import-cycles.py --self-test

What counts:
- A module is a top-level module of the crate: src/foo.rs, src/foo/mod.rs and every file under
  src/foo/ are module `foo`. lib.rs and main.rs (the crate root) are not importers; src/bin/
  holds other crates and is skipped.
- foo -> bar when code in foo names `crate::bar` (in `use crate::bar`, in a group
  `use crate::{bar::x, baz}`, nested or over several lines, or inline, `crate::bar::f()`), or a
  `super::` path that climbs to the crate root and then names bar: `super::bar` in src/foo.rs
  or src/foo/mod.rs, `super::super::bar` in src/foo/x.rs (inline `mod m { }` blocks count as a
  level). Comments and string and char literals are stripped first, so prose does not count.
- A name after `crate::` that is no module (an item the root re-exports, or a module that has
  moved) is no edge; each such name is listed on stderr as a note.

Exit status: 0 without cycles, 1 with one or more, 2 on a usage error or a failed self-test.
"""

import os
import re
import sys
import tempfile
from collections import defaultdict

DEFAULT_SRC = "engine/manager/src"
ROOT_FILES = ("lib.rs", "main.rs")


def strip_code(text):
    """Blanks out comments (nested /* */ too), string literals (raw and byte ones too) and
    char literals, keeping newlines so that line numbers stay right."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        out.append("".join(c if c == "\n" else " " for c in s))

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(text[i:j])
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(text[i:j])
            i = j
        elif (m := re.compile(r'(?:br|r|cr)(#*)"').match(text, i)) and not _ident_before(text, i):
            end = text.find('"' + m.group(1), m.end())
            j = n if end < 0 else end + 1 + len(m.group(1))
            blank(text[i:j])
            i = j
        elif c == '"' or (c in "bc" and text.startswith('"', i + 1) and not _ident_before(text, i)):
            j = i + (1 if c == '"' else 2)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            blank(text[i:j])
            i = j
        elif c == "'" or (c == "b" and text.startswith("'", i + 1) and not _ident_before(text, i)):
            q = i if c == "'" else i + 1
            if text.startswith("\\", q + 1):  # '\n', '\'', '\u{..}'
                j = q + 3
                while j < n and text[j] != "'":
                    j += 1
                j = min(j + 1, n)
            elif q + 2 < n and text[q + 2] == "'":  # 'a', '"', '{'
                j = q + 3
            else:  # a lifetime or a loop label
                out.append(text[i : q + 1])
                i = q + 1
                continue
            blank(text[i:j])
            i = j
        else:
            j = i + 1
            while j < n and text[j] not in "/\"'rbc":
                j += 1
            # r, b or c inside an identifier (`for`, `crate`) starts no literal: copy it all.
            if j < n and text[j] in "rbc" and _ident_before(text, j):
                while j < n and (text[j].isalnum() or text[j] == "_"):
                    j += 1
            out.append(text[i:j])
            i = j
    return "".join(out)


def _ident_before(text, i):
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


TOKEN = re.compile(r"\s+|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<p>::|[{}(),;*$])|.", re.S)


def tokens(code):
    """(kind, text, line) for identifiers and the punctuation that paths are made of."""
    out, line = [], 1
    for m in TOKEN.finditer(code):
        s = m.group()
        if m.group("id"):
            out.append(("id", s, line))
        elif m.group("p"):
            out.append(("p", s, line))
        elif not s.isspace():
            out.append(("p", s, line))
        line += s.count("\n")
    return out


def group_heads(toks, k):
    """toks[k] is '{' of a use group: the first segment of each of its entries, as
    (name, line), and the index past the matching '}'."""
    heads, depth, expect = [], 0, True
    while k < len(toks):
        kind, s, line = toks[k]
        if s == "{":
            depth += 1
            expect = depth == 1
        elif s == "}":
            depth -= 1
            if depth == 0:
                return heads, k + 1
        elif s == "," and depth == 1:
            expect = True
        elif expect and depth == 1:
            if kind == "id" and s not in ("self", "super", "crate"):
                heads.append((s, line))
            expect = False
        k += 1
    return heads, k


def root_names(toks, k):
    """toks[k] follows a `crate::` (or a super:: chain that reached the root): the top-level
    names the path goes on with."""
    if k >= len(toks):
        return []
    kind, s, line = toks[k]
    if kind == "id":
        return [] if s in ("self", "super", "crate") else [(s, line)]
    if s == "{":
        return group_heads(toks, k)[0]
    return []  # `crate::*`


def references(code, path):
    """Top-level names that the file refers to through the crate root, as (name, line).
    path: the file's module path, e.g. ["foo"] for src/foo.rs or src/foo/mod.rs."""
    toks = tokens(code)
    refs = []
    depth, inline = 0, []  # inline: brace depths at which `mod name {` blocks were opened
    for k, (kind, s, line) in enumerate(toks):
        prev = toks[k - 1][1] if k else ""
        nxt = toks[k + 1][1] if k + 1 < len(toks) else ""
        if s == "{":
            depth += 1
            if k >= 2 and toks[k - 2][1] == "mod" and toks[k - 1][0] == "id":
                inline.append(depth)
        elif s == "}":
            if inline and inline[-1] == depth:
                inline.pop()
            depth -= 1
        elif kind != "id" or nxt != "::" or prev in ("::", "$"):
            continue
        elif s == "crate":
            refs += root_names(toks, k + 2)
        elif s == "super":
            climbs, j = 0, k
            while j + 1 < len(toks) and toks[j][1] == "super" and toks[j + 1][1] == "::":
                climbs, j = climbs + 1, j + 2
            if len(path) + len(inline) - climbs == 0:
                refs += root_names(toks, j)
    return refs


def module_files(src):
    """{module: [file paths]} for the crate whose root is the directory src."""
    modules = defaultdict(list)
    for entry in sorted(os.listdir(src)):
        full = os.path.join(src, entry)
        if os.path.isfile(full) and entry.endswith(".rs") and entry not in ROOT_FILES:
            modules[entry[:-3]].append(full)
        elif os.path.isdir(full) and entry != "bin":
            for dirpath, dirnames, filenames in os.walk(full):
                dirnames.sort()
                for f in sorted(filenames):
                    if f.endswith(".rs"):
                        modules[entry].append(os.path.join(dirpath, f))
    return modules


def module_path(src, file):
    parts = os.path.relpath(file, src)[:-3].split(os.sep)
    return parts[:-1] if parts[-1] == "mod" else parts


def inline_root_modules(src):
    """Modules written inline in the crate root (`mod foo { ... }`): targets, never importers."""
    names = set()
    for root in ROOT_FILES:
        file = os.path.join(src, root)
        if os.path.isfile(file):
            with open(file, encoding="utf-8") as f:
                toks = tokens(strip_code(f.read()))
            depth = 0
            for k, (_, s, _) in enumerate(toks):
                if s == "{":
                    if depth == 0 and k >= 2 and toks[k - 2][1] == "mod" and toks[k - 1][0] == "id":
                        names.add(toks[k - 1][1])
                    depth += 1
                elif s == "}":
                    depth -= 1
    return names


def graph(src):
    """(modules, edges, unresolved): edges maps (a, b) to the first "file:line" of a -> b;
    unresolved maps a name after crate:: that is no module to [count, first "file:line"]."""
    files = module_files(src)
    modules = set(files) | inline_root_modules(src)
    edges, unresolved = {}, {}
    for mod in sorted(files):
        for file in files[mod]:
            with open(file, encoding="utf-8") as f:
                code = strip_code(f.read())
            for name, line in references(code, module_path(src, file)):
                where = f"{file}:{line}"
                if name not in modules:
                    unresolved.setdefault(name, [0, where])[0] += 1
                elif name != mod:
                    edges.setdefault((mod, name), where)
    return sorted(modules), edges, unresolved


def components(modules, succ):
    """Strongly connected components (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    for start in modules:
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on_stack.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    out.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = len(index)
                stack.append(w)
                on_stack.add(w)
                work.append((w, iter(succ[w])))
            elif w in on_stack:
                low[v] = min(low[v], index[w])
    return out


def shortest_path(succ, allowed, a, b):
    """Shortest path a ... b inside allowed (BFS, ties broken by name)."""
    came, frontier = {a: None}, [a]
    while frontier:
        nxt = []
        for v in frontier:
            for w in succ[v]:
                if w in allowed and w not in came:
                    came[w] = v
                    if w == b:
                        path = [b]
                        while came[path[-1]] is not None:
                            path.append(came[path[-1]])
                        return path[::-1]
                    nxt.append(w)
        frontier = nxt
    return None


def cycles_of(comp, succ):
    """Simple cycles that between them take every edge of the component once at least: for
    each edge a -> b, the shortest way back from b to a. Each starts at its smallest module."""
    allowed, seen, out = set(comp), set(), []
    for a in comp:
        for b in succ[a]:
            if b in allowed:
                cyc = [a] + shortest_path(succ, allowed, b, a)[:-1]
                r = cyc.index(min(cyc))
                cyc = tuple(cyc[r:] + cyc[:r])
                if cyc not in seen:
                    seen.add(cyc)
                    out.append(cyc)
    return sorted(out, key=lambda c: (len(c), c))


def dependency_order(modules, succ):
    """Modules with those depended on first; among the ready ones, by name."""
    done, order = set(), []
    while len(order) < len(modules):
        ready = [m for m in modules if m not in done and all(d in done for d in succ[m])]
        done.add(ready[0])
        order.append(ready[0])
    return order


def check(src, out, err):
    """Checks one crate: writes its report lines to out (and notes to err); returns the exit
    status, 0 or 1."""
    modules, edges, unresolved = graph(src)
    for name, (count, where) in sorted(unresolved.items()):
        err.append(f"note: crate::{name} ({count} use{'s' * (count > 1)}, first at {where}) "
                   "names no module of this crate: not counted")
    succ = defaultdict(list)
    for a, b in sorted(edges):
        succ[a].append(b)
    comps = [c for c in components(modules, succ) if len(c) > 1]
    if not comps:
        out.append("order: " + " ".join(dependency_order(modules, succ)))
        return 0
    for comp in sorted(comps):
        for cyc in cycles_of(comp, succ):
            out.append("cycle: " + " -> ".join(cyc + (cyc[0],)))
            for a, b in zip(cyc, cyc[1:] + (cyc[0],)):
                out.append(f"    {a} -> {b}: {edges[(a, b)]}")
    return 1


def main(args):
    if args == ["--self-test"]:
        return self_test()
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if any(a.startswith("-") for a in args):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    dirs = args or [DEFAULT_SRC]
    status = 0
    for src in dirs:
        if not os.path.isdir(src):
            print(f"error: {src} is no directory", file=sys.stderr)
            return 2
        out, err = [], []
        status = max(status, check(src, out, err))
        if len(dirs) > 1:
            print(f"# {src}")
        for line in err:
            print(line, file=sys.stderr)
        for line in out:
            print(line)
    return status


# --- Self-test ------------------------------------------------------------------------------

FAKE_CRATE = {
    "lib.rs": """
        pub mod a; pub mod b; pub mod c; pub mod d;
        use crate::a::f;            // the root is no importer
        mod inline_root { }
        pub use b::Thing;
    """,
    # a -> b and a -> c, through one nested, multi-line group.
    "a.rs": """
        use crate::{
            b::{self, Thing},
            c::{
                inner::{Deep, Deeper},
                other,
            },
            Thing as _,
        };
        pub fn f() -> u32 { 1 }
    """,
    # Module b, in a directory: b -> d inline, from a submodule; super:: there is b itself.
    "b/mod.rs": """
        pub mod x;
        pub struct Thing;
        // crate::a in a comment does not count, /* nor /* nested */ crate::a */ here.
        const DOC: &str = "crate::a in a string does not count";
        const RAW: &str = r#"nor "crate::a" in a raw string"#;
        const Q: char = '"'; const E: char = '\\''; fn l<'a>(s: &'a str) -> &'a str { s }
    """,
    "b/x.rs": """
        use super::Thing;
        pub fn g() { crate::d::h(); }
        mod tests { use super::super::Thing; }
    """,
    # c -> a through super:: from a top-level file; c -> inline_root through the root module.
    "c.rs": """
        pub fn h() -> u32 { super::a::f() + crate::inline_root::N }
    """,
    "d.rs": """
        pub fn h() {}
        macro_rules! m { () => { $crate::a::f() }; }
        #[cfg(test)] mod tests { use super::*; }
    """,
}


def self_test():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, variant in (("cycle", "with"), ("nocycle", "without")):
            src = os.path.join(tmp, name, "src")
            for rel, text in FAKE_CRATE.items():
                os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
                if variant == "without" and rel == "c.rs":
                    text = "pub fn h() -> u32 { super::d::h(); crate::inline_root::N }"
                with open(os.path.join(src, rel), "w", encoding="utf-8") as f:
                    f.write(text)
            out, err = [], []
            status = check(src, out, err)
            edges = set(graph(src)[1])
            if variant == "with":
                want_edges = {("a", "b"), ("a", "c"), ("b", "d"), ("c", "a"), ("c", "inline_root")}
                want_out = [
                    "cycle: a -> c -> a",
                    f"    a -> c: {os.path.join(src, 'a.rs')}:4",
                    f"    c -> a: {os.path.join(src, 'c.rs')}:2",
                ]
                want_status = 1
            else:
                want_edges = {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("c", "inline_root")}
                want_out = ["order: d b inline_root c a"]
                want_status = 0
            if edges != want_edges:
                failures.append(f"{name}: edges {sorted(edges)}, want {sorted(want_edges)}")
            if (status, out) != (want_status, want_out):
                failures.append(f"{name}: exit {status} with {out}, want {want_status} with {want_out}")
    for failure in failures:
        print("self-test FAILED: " + failure, file=sys.stderr)
    if not failures:
        print("self-test passed: the cycle a -> c -> a found, none in the crate without it")
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
