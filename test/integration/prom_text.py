#!/usr/bin/env python3
"""A strict reader of the Prometheus text exposition format 0.0.4, for retryq's tests.

It refuses what Prometheus' own parser refuses and more: a sample before its family's
TYPE, a second HELP or TYPE, a family split in two, a duplicate series, a bad metric or
label name, an escape other than \\\\ \\" \\n in a label value (\\\\ \\n in HELP), a
value that is not a Go float, a histogram whose buckets are not cumulative, not sorted,
lack le="+Inf" or disagree with _count, a counter below zero, and a body that does not
end in a newline.

    prom_text.py check < body              validate; prints a summary, exit 1 on error
    prom_text.py value NAME [L=V ...] < body   prints the sample's value (exit 1: none)
    prom_text.py labels NAME < body        prints the label sets of NAME as JSON
    prom_text.py selftest                  proves the reader refuses broken bodies
"""
import json
import math
import re
import sys

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|Inf|inf)\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class ParseError(Exception):
    pass


def parse_float(text, where):
    if text == "NaN":
        return math.nan
    if not FLOAT.match(text):
        raise ParseError(f"{where}: {text!r} is not a float")
    return float(text)


def unescape_help(text, where):
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\n":
                raise ParseError(f"{where}: bad escape in HELP")
            out.append("\\" if text[i + 1] == "\\" else "\n")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_labels(text, i, where):
    """text[i] is '{'; returns (labels dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if i < len(text) and text[i] == "}":
            return labels, i + 1
        m = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*").match(text, i)
        if not m:
            raise ParseError(f"{where}: bad label name at column {i}")
        name = m.group(0)
        if name.startswith("__"):
            raise ParseError(f"{where}: reserved label name {name}")
        if name in labels:
            raise ParseError(f"{where}: label {name} given twice")
        i = m.end()
        if text[i:i + 2] != '="':
            raise ParseError(f"{where}: expected =\" after {name}")
        i += 2
        value = []
        while True:
            if i >= len(text):
                raise ParseError(f"{where}: unterminated label value")
            c = text[i]
            if c == "\\":
                nxt = text[i + 1:i + 2]
                if nxt not in ('\\', '"', 'n'):
                    raise ParseError(f"{where}: bad escape \\{nxt} in label value")
                value.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                i += 2
                continue
            if c == '"':
                i += 1
                break
            if c == "\n":
                raise ParseError(f"{where}: raw newline in label value")
            value.append(c)
            i += 1
        labels[name] = "".join(value)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        if i < len(text) and text[i] == "}":
            return labels, i + 1
        raise ParseError(f"{where}: expected , or }} in label set")


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if types.get(base) in ("histogram", "summary"):
                return base
    return name


def parse(body):
    if body and not body.endswith("\n"):
        raise ParseError("the body does not end with a newline")
    helps, types, order, samples = {}, {}, [], []
    seen_series = set()
    closed = set()
    current = None
    for n, line in enumerate(body.split("\n")[:-1] if body else [], 1):
        where = f"line {n}"
        if line.strip() == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                if len(parts) < 3 or not METRIC_NAME.match(parts[2]):
                    raise ParseError(f"{where}: bad metric name in {parts[1]}")
                name = parts[2]
                if name in closed or (current is not None and current != name and name in order):
                    raise ParseError(f"{where}: {parts[1]} for {name} after its samples ended")
                if parts[1] == "HELP":
                    if name in helps:
                        raise ParseError(f"{where}: second HELP for {name}")
                    helps[name] = unescape_help(parts[3] if len(parts) > 3 else "", where)
                else:
                    if name in types:
                        raise ParseError(f"{where}: second TYPE for {name}")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ParseError(f"{where}: bad TYPE line")
                    if any(family_of(s[0], {name: parts[3]}) == name for s in samples):
                        raise ParseError(f"{where}: TYPE for {name} after its first sample")
                    types[name] = parts[3]
                if current is not None and current != name:
                    closed.add(current)
                current = name
                if name not in order:
                    order.append(name)
            continue
        m = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*").match(line)
        if not m:
            raise ParseError(f"{where}: bad metric name")
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i, where)
        rest = line[i:]
        if not rest.startswith((" ", "\t")):
            raise ParseError(f"{where}: expected a blank before the value")
        fields = rest.split()
        if len(fields) not in (1, 2):
            raise ParseError(f"{where}: expected a value and an optional timestamp")
        value = parse_float(fields[0], where)
        if len(fields) == 2 and not re.fullmatch(r"-?[0-9]+", fields[1]):
            raise ParseError(f"{where}: bad timestamp")
        fam = family_of(name, types)
        if fam in closed:
            raise ParseError(f"{where}: family {fam} split in two")
        if current is not None and current != fam:
            closed.add(current)
        current = fam
        if fam not in order:
            order.append(fam)
        key = (name, tuple(sorted(labels.items())))
        if key in seen_series:
            raise ParseError(f"{where}: duplicate series {name}{labels}")
        seen_series.add(key)
        samples.append((name, labels, value))
    check_families(types, samples)
    return {"help": helps, "type": types, "samples": samples}


def check_families(types, samples):
    for fam, kind in types.items():
        mine = [s for s in samples if family_of(s[0], types) == fam]
        if kind == "counter":
            for name, labels, v in mine:
                if name != fam:
                    raise ParseError(f"counter {fam}: stray sample {name}")
                if not (v >= 0):
                    raise ParseError(f"counter {fam}{labels}: {v} is below zero")
        if kind == "histogram":
            groups = {}
            for name, labels, v in mine:
                if name == fam:
                    raise ParseError(f"histogram {fam}: plain sample")
                base = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
                g = groups.setdefault(base, {"buckets": [], "sum": None, "count": None})
                if name.endswith("_bucket"):
                    if "le" not in labels:
                        raise ParseError(f"histogram {fam}: bucket without le")
                    g["buckets"].append((parse_float(labels["le"], fam), v))
                elif name.endswith("_sum"):
                    g["sum"] = v
                else:
                    g["count"] = v
            for base, g in groups.items():
                b = g["buckets"]
                if not b or b[-1][0] != math.inf:
                    raise ParseError(f"histogram {fam}: last bucket must be le=\"+Inf\"")
                if [x[0] for x in b] != sorted(x[0] for x in b):
                    raise ParseError(f"histogram {fam}: buckets not sorted by le")
                if any(b[k][1] > b[k + 1][1] for k in range(len(b) - 1)):
                    raise ParseError(f"histogram {fam}: buckets not cumulative")
                if g["count"] is None or g["sum"] is None:
                    raise ParseError(f"histogram {fam}: _sum or _count missing")
                if g["count"] != b[-1][1]:
                    raise ParseError(f"histogram {fam}: _count {g['count']} != +Inf bucket {b[-1][1]}")


def find(doc, name, want):
    for n, labels, v in doc["samples"]:
        if n == name and all(labels.get(k) == x for k, x in want.items()):
            return v
    return None


GOOD = (
    '# HELP a_total Help with \\\\ and \\n.\n# TYPE a_total counter\na_total{x="q\\"\\\\\\n"} 1\n'
    '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3.5\nh_count 2\n'
    'plain 1e+09\nplain2 NaN 1700000000000\n'
)
BAD = {
    "no final newline": "a 1",
    "sample before TYPE": "a 1\n# TYPE a gauge\n",
    "second TYPE": "# TYPE a gauge\n# TYPE a gauge\na 1\n",
    "second HELP": "# HELP a x\n# HELP a y\na 1\n",
    "split family": "a{x=\"1\"} 1\nb 1\na{x=\"2\"} 1\n",
    "duplicate series": "a{x=\"1\"} 1\na{x=\"1\"} 2\n",
    "bad escape": "a{x=\"\\t\"} 1\n",
    "unquoted label": "a{x=1} 1\n",
    "bad name": "1a 1\n",
    "bad value": "a one\n",
    "hex value": "a 0x10\n",
    "negative counter": "# TYPE c counter\nc -1\n",
    "no +Inf bucket": "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
    "buckets not cumulative": "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    "count mismatch": "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
    "bad type": "# TYPE a thing\na 1\n",
    "reserved label": "a{__x=\"1\"} 1\n",
}


def selftest():
    doc = parse(GOOD)
    assert find(doc, "a_total", {"x": 'q"\\\n'}) == 1, doc
    assert doc["help"]["a_total"] == "Help with \\ and \n.", doc["help"]
    for what, body in BAD.items():
        try:
            parse(body)
        except ParseError:
            continue
        print(f"selftest: accepted a broken body ({what})", file=sys.stderr)
        return 1
    print(f"selftest: ok ({len(BAD)} broken bodies refused)")
    return 0


def main(argv):
    if len(argv) > 1 and argv[1] == "selftest":
        return selftest()
    body = sys.stdin.buffer.read().decode("utf-8")
    try:
        doc = parse(body)
    except ParseError as e:
        print(f"invalid exposition: {e}", file=sys.stderr)
        return 1
    if argv[1] == "check":
        print(f"ok: {len(doc['type'])} families, {len(doc['samples'])} samples")
        missing = [f for f in doc["type"] if f not in doc["help"]]
        if missing:
            print(f"invalid exposition: no HELP for {missing}", file=sys.stderr)
            return 1
        return 0
    if argv[1] == "value":
        want = dict(a.split("=", 1) for a in argv[3:])
        v = find(doc, argv[2], want)
        if v is None:
            return 1
        print(int(v) if math.isfinite(v) and v == int(v) else repr(v))
        return 0
    if argv[1] == "labels":
        print(json.dumps([labels for n, labels, v in doc["samples"] if n == argv[2]]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
