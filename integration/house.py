#!/usr/bin/env python3
"""The house rules of src/ (issue 13, ../shared/DESIGN.md), checked from the
source text:

- rooms import only rooms below them (DESIGN.md's order), so there is no
  import circle: read from every `crate::ROOM` path outside tests;
- files hold about 400 lines of non-test code, functions about 80 lines;
- no `#[allow(clippy::too_many_arguments)]`.

Usage: integration/house.py [--strict]   (exit 1 on a layering violation;
with --strict also on a size or allow violation). Prints what it found.
"""
import os
import re
import sys

# Bottom floor first: each room may import only rooms before it.
ORDER = [
    "shutdown", "protocol", "config", "tls", "metrics", "sql", "prepared", "router",
    "sizing", "pool", "topology", "relay", "shared", "error", "session",
    "admin", "front", "app", "demo", "main", "lib",
]
FILE_LIMIT = 400
FN_LIMIT = 80

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def room_of(path):
    rel = os.path.relpath(path, SRC)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def strip_tests(text):
    """The text before the first `#[cfg(test)]` item (tests sit last)."""
    # An inline test module (`mod tests {`); a declaration of a test file
    # (`mod tests;`) may sit at the top and ends nothing.
    m = re.search(r"#\[cfg\(test\)\]\nmod [a-z_]+ \{", text)
    return text if m is None else text[:m.start()]


def code_lines(text):
    n = 0
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("//"):
            n += 1
    return n


def long_functions(text):
    """(name, lines) of each fn whose body spans more than FN_LIMIT lines."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"\s*(pub(\([a-z]+\))? )?(async )?(const )?fn ([a-z_0-9]+)", lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            depth += lines[j].count("{") - lines[j].count("}")
            started |= "{" in lines[j]
            if started and depth <= 0:
                break
            if not started and lines[j].rstrip().endswith(";"):
                break
            j += 1
        if j - i + 1 > FN_LIMIT:
            out.append((m.group(5), j - i + 1))
        i += 1
    return out


def main():
    strict = "--strict" in sys.argv
    layering, sizes, allows = [], [], []
    for root, _, files in os.walk(SRC):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, SRC)
            text = open(path, encoding="utf-8").read()
            body = strip_tests(text)
            if f.endswith("tests.rs") or f == "test_wire.rs":
                body = ""
            me = room_of(path)
            for other in sorted(set(re.findall(r"crate::([a-z_]+)", body))):
                if other == me or other not in ORDER or me not in ORDER:
                    continue
                if ORDER.index(other) > ORDER.index(me):
                    layering.append(f"{rel}: {me} imports {other}")
            n = code_lines(body)
            if n > FILE_LIMIT:
                sizes.append(f"{rel}: {n} lines of non-test code")
            for name, span in long_functions(body):
                sizes.append(f"{rel}: fn {name} is {span} lines")
            if "too_many_arguments" in body:
                allows.append(f"{rel}: allows clippy::too_many_arguments")
    for title, found in [("imports against the room order", layering),
                         ("over the size limits", sizes),
                         ("allowed lints", allows)]:
        print(f"{title}: {len(found)}")
        for line in found:
            print(f"  {line}")
    failed = bool(layering) or (strict and (sizes or allows))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
