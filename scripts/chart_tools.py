#!/usr/bin/env python3
"""Helpers of scripts/check-chart.sh for rendered Helm output (needs PyYAML; run with .venv/bin/python).

  split RENDERED OUTDIR       one file per document: OUTDIR/NN-Kind-name.yaml; prints "Kind<TAB>path" per file
  kinds RENDERED              prints "Kind count" per kind
  get FILE KIND KEY...        prints, as JSON, the value at KEY... in the first KIND object of FILE (KIND "-":
                              the first document, e.g. a values file); a KEY is a mapping key, a list index,
                              name=X (the list item named X) or * (each list item); null when absent
  grace RENDERED              checks terminationGracePeriodSeconds > SHUTDOWN_TIMEOUT_SECS in every Deployment
  meta RENDERED VALUES NS     checks every object is in VALUES' namespaceOverride (else NS) and carries VALUES'
                              commonLabels (pods too), and that no selector has one of them
  env RENDERED                checks no container has an env name twice (the API server keeps both) and that
                              each $(VAR) in a value names a variable defined before it (only those expand)
  checkov JSON DOC            checks the failed checks of checkov's JSON report against the table of DOC between
                              the checkov-skips markers (one row per check id: the kinds it may fail on, why):
                              any other finding fails, and so does a row no finding needs any more
  doc VALUES                  checks that every value in VALUES has a comment line directly above it
                              (a commented mapping documents its whole subtree)
  rules DOC PLAIN OUT          writes the spec of the rendered PrometheusRule DOC to OUT as a rule file and
                              checks it is PLAIN (files/prometheus-rules.yaml) with every runbook_url
                              under the release's runbookBaseUrl instead of PLAIN's
  dashboard DOC JSON          checks the rendered ConfigMap DOC carries JSON (the dashboard) unchanged
  compare RENDERED KEDA_DIR   compares the spec of the rendered ScaledObject/TriggerAuthentication with
                              KEDA_DIR/scaledobject.yaml and KEDA_DIR/triggerauthentication.yaml
  readme VALUES README [--write]
                              checks that README's values table (between the values-table markers) is the
                              one VALUES' "# --" comments give (helm-docs style: key, type, default,
                              description; every value must be covered); --write rewrites it instead
Exit 0 on success, 1 with a message on stderr otherwise.
"""
import collections
import json
import os
import re
import sys

import yaml


class StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a template can render such a mapping
    (e.g. a label given twice) and the API server would keep one of them just as silently."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, "duplicate key %r" % (key,), key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(path):
    with open(path) as f:
        try:
            return [d for d in yaml.load_all(f, Loader=StrictLoader) if d]
        except yaml.YAMLError as e:
            fail("%s: %s" % (path, e))


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def cmd_split(rendered, outdir):
    os.makedirs(outdir, exist_ok=True)
    for i, d in enumerate(load(rendered)):
        name = d.get("metadata", {}).get("name", "unnamed")
        path = os.path.join(outdir, "%02d-%s-%s.yaml" % (i, d["kind"], name))
        with open(path, "w") as f:
            yaml.safe_dump(d, f, sort_keys=False)
        print("%s\t%s" % (d["kind"], path))


def cmd_kinds(rendered):
    c = collections.Counter(d["kind"] for d in load(rendered))
    for k, n in sorted(c.items()):
        print(k, n)


def dig(node, keys):
    if not keys or node is None:
        return node
    key, rest = keys[0], keys[1:]
    if isinstance(node, list):
        if key == "*":
            return [dig(item, rest) for item in node]
        if key.startswith("name="):
            found = [item for item in node if isinstance(item, dict) and item.get("name") == key[5:]]
            return dig(found[0], rest) if found else None
        if key.isdigit():
            return dig(node[int(key)], rest) if int(key) < len(node) else None
        return None
    if isinstance(node, dict):
        return dig(node.get(key), rest)
    return None


def cmd_get(path, kind, *keys):
    docs = load(path)
    found = docs[:1] if kind == "-" else [d for d in docs if d.get("kind") == kind][:1]
    print(json.dumps(dig(found[0], list(keys)) if found else None, sort_keys=True))


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "CustomResourceDefinition"}
SELECTORS = {  # kind -> the path of its label selector
    "Deployment": ("spec", "selector", "matchLabels"),
    "Service": ("spec", "selector"),
    "PodDisruptionBudget": ("spec", "selector", "matchLabels"),
    "NetworkPolicy": ("spec", "podSelector", "matchLabels"),
    "ServiceMonitor": ("spec", "selector", "matchLabels"),
}


def cmd_meta(rendered, values, release_ns):
    [vals] = load(values)
    ns = vals.get("namespaceOverride") or release_ns
    common = vals.get("commonLabels") or {}
    problems, n = [], 0
    for d in load(rendered):
        what = "%s %s" % (d["kind"], d["metadata"]["name"])
        n += 1
        if d["kind"] not in CLUSTER_SCOPED and d["metadata"].get("namespace") != ns:
            problems.append("%s: namespace %r, want %r" % (what, d["metadata"].get("namespace"), ns))
        label_sets = [("labels", d["metadata"].get("labels") or {})]
        if d["kind"] == "Deployment":
            label_sets.append(("pod labels", dig(d, ["spec", "template", "metadata", "labels"]) or {}))
        for where, labels in label_sets:
            for k, v in common.items():
                if labels.get(k) != v:
                    problems.append("%s: %s have %s=%r, want %r (commonLabels)" % (what, where, k, labels.get(k), v))
        selector = dig(d, list(SELECTORS.get(d["kind"], ()))) if d["kind"] in SELECTORS else None
        if d["kind"] in SELECTORS and not selector:
            problems.append("%s: no selector at %s" % (what, ".".join(SELECTORS[d["kind"]])))
        for k in common:
            if k in (selector or {}):
                problems.append("%s: commonLabels key %s is in its selector (immutable)" % (what, k))
    if problems:
        fail("\n".join(problems))
    print("%d objects in namespace %s with commonLabels %s, none in a selector" % (n, ns, json.dumps(common, sort_keys=True)))


def cmd_env(rendered):
    problems, n = [], 0
    for d in load(rendered):
        spec = dig(d, ["spec", "template", "spec"]) if d["kind"] != "Pod" else d.get("spec")
        for c in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
            seen = []
            for e in c.get("env") or []:
                where = "%s %s, container %s, %s" % (d["kind"], d["metadata"]["name"], c["name"], e["name"])
                if e["name"] in seen:
                    problems.append("%s: given twice" % where)
                # $$(VAR) is an escaped, literal $(VAR).
                for ref in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                    if ref not in seen:
                        problems.append("%s: $(%s) is not defined before it (left unexpanded)" % (where, ref))
                seen.append(e["name"])
                n += 1
    if problems:
        fail("\n".join(problems))
    print("%d env entries, no name twice, every $(VAR) defined before its use" % n)


SKIPS_START, SKIPS_END = "<!-- checkov-skips:start -->", "<!-- checkov-skips:end -->"


def cmd_checkov(report, doc):
    with open(doc) as f:
        text = f.read()
    if text.count(SKIPS_START) != 1 or text.count(SKIPS_END) != 1:
        fail("%s: expected one %s and one %s around the justified checkov findings" % (doc, SKIPS_START, SKIPS_END))
    allowed = {}  # check id -> kinds
    for line in text.split(SKIPS_START)[1].split(SKIPS_END)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`?(CKV2?_K8S_[0-9]+)`?", cells[0]) if len(cells) >= 4 else None
        if m:
            if not cells[3]:
                fail("%s: %s has no reason" % (doc, m.group(1)))
            allowed[m.group(1)] = {k.strip() for k in cells[1].split(",") if k.strip()}
    with open(report) as f:
        reports = json.load(f)
    reports = reports if isinstance(reports, list) else [reports]
    summary = collections.Counter()
    for r in reports:
        summary.update({k: v for k, v in r.get("summary", {}).items() if isinstance(v, int)})
    if summary["parsing_errors"] or not summary["resource_count"]:
        fail("checkov: %d parsing errors, %d resources scanned" % (summary["parsing_errors"], summary["resource_count"]))
    found, unjustified = collections.Counter(), []
    for r in reports:
        for f in r.get("results", {}).get("failed_checks", []):
            kind = f["resource"].split(".")[0]
            found[(f["check_id"], kind)] += 1
            if kind not in allowed.get(f["check_id"], ()):
                unjustified.append("%s %s on %s in %s" % (f["check_id"], f["check_name"], f["resource"], os.path.basename(f["file_path"])))
    stale = ["%s on %s" % (cid, kind) for cid, kinds in sorted(allowed.items()) for kind in sorted(kinds)
             if not found[(cid, kind)]]
    if unjustified or stale:
        fail("\n".join(["unjustified (fix it, or justify it in %s): %s" % (doc, u) for u in unjustified] +
                       ["justified in %s but no longer found (remove the row or the kind): %s" % (doc, s) for s in stale]))
    print("%d resources, %d passed, %d findings, each justified in %s: %s" % (
        summary["resource_count"], summary["passed"], sum(found.values()), doc,
        ", ".join("%s %s x%d" % (cid, kind, n) for (cid, kind), n in sorted(found.items()))))


def cmd_grace(rendered):
    deps = [d for d in load(rendered) if d["kind"] == "Deployment"]
    if not deps:
        fail("no Deployment rendered")
    for d in deps:
        spec = d["spec"]["template"]["spec"]
        grace = spec.get("terminationGracePeriodSeconds")
        env = {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env", [])}
        shutdown = env.get("SHUTDOWN_TIMEOUT_SECS")
        if grace is None or shutdown is None:
            fail("%s: terminationGracePeriodSeconds=%r SHUTDOWN_TIMEOUT_SECS=%r (both must be set)"
                 % (d["metadata"]["name"], grace, shutdown))
        if not int(grace) > int(shutdown):
            fail("%s: terminationGracePeriodSeconds %s is not greater than SHUTDOWN_TIMEOUT_SECS %s"
                 % (d["metadata"]["name"], grace, shutdown))
        print("terminationGracePeriodSeconds %s > SHUTDOWN_TIMEOUT_SECS %s" % (grace, shutdown))


def normalise(obj, names):
    """Replace the rendered object names with the standalone ones (the obvious substitution)."""
    s = json.dumps(obj, sort_keys=True)
    for old, new in names.items():
        s = s.replace(json.dumps(old), json.dumps(new))
    return json.loads(s)


def cmd_compare(rendered, keda_dir):
    docs = load(rendered)
    ok = True
    for kind, fname in (("ScaledObject", "scaledobject.yaml"), ("TriggerAuthentication", "triggerauthentication.yaml")):
        got = [d for d in docs if d["kind"] == kind]
        want = [d for d in load(os.path.join(keda_dir, fname)) if d["kind"] == kind]
        if len(got) != 1 or len(want) != 1:
            fail("%s: expected one in the render and one in %s, found %d and %d" % (kind, fname, len(got), len(want)))
        # The chart names everything after the release's full name; the standalone files use
        # "reservation-worker" for the Deployment, the ScaledObject and the TriggerAuthentication.
        names = {got[0]["metadata"]["name"]: want[0]["metadata"]["name"]}
        a = normalise(got[0]["spec"], names)
        b = want[0]["spec"]
        if a != b:
            ok = False
            print("%s spec differs between the chart and keda/%s:" % (kind, fname), file=sys.stderr)
            import difflib
            sys.stderr.writelines(difflib.unified_diff(
                yaml.safe_dump(a, sort_keys=True).splitlines(True),
                yaml.safe_dump(b, sort_keys=True).splitlines(True),
                "chart", "keda/" + fname))
        else:
            print("%s spec matches keda/%s" % (kind, fname))
    if not ok:
        sys.exit(1)


# Settings of .env.example that the chart leaves out on purpose: on EKS credentials come from IRSA,
# endpoints are AWS's own, and LOG_LEVEL covers RUST_LOG (extraEnv can still set any of them).
LOCAL_ONLY = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "RUST_LOG"}


def cmd_settings(env_example, template):
    """Every worker setting documented in .env.example has an env entry in the Deployment."""
    with open(env_example) as f:
        settings = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", f.read(), re.M)) - LOCAL_ONLY
    with open(template) as f:
        in_chart = set(re.findall(r"name: ([A-Z][A-Z0-9_]+)\b", f.read()))
    missing = sorted(settings - in_chart)
    if missing:
        fail("settings of %s with no env entry in %s: %s" % (env_example, template, ", ".join(missing)))
    print("all %d worker settings of %s are in %s" % (len(settings), env_example, template))


PLAIN_RUNBOOK = "https://github.com/example/reservation-worker/blob/main/docs/runbook.md"


def cmd_rules(doc, plain, out):
    [rule] = load(doc)
    groups = rule["spec"]["groups"]
    with open(out, "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    with open(plain) as f:
        want = yaml.safe_load(f)["groups"]
    urls = [r["annotations"]["runbook_url"] for g in groups for r in g["rules"]]
    bases = {u.split("#")[0] for u in urls}
    if len(bases) != 1:
        fail("runbook_url bases differ: %s" % sorted(bases))
    base = bases.pop()
    rebased = json.loads(json.dumps(want).replace(PLAIN_RUNBOOK, base))
    if rebased != groups:
        fail("the PrometheusRule's groups differ from %s (runbook base %s)" % (plain, base))
    print("%d rules, as in %s, runbooks under %s" % (len(urls), plain, base))


def cmd_dashboard(doc, dashboard):
    [cm] = load(doc)
    with open(dashboard) as f:
        want = f.read()
    data = cm.get("data", {})
    if list(data) != [os.path.basename(dashboard)] or data[os.path.basename(dashboard)] != want:
        fail("the ConfigMap's data is not %s unchanged: keys %s" % (dashboard, list(data)))
    json.loads(want)
    print("the dashboard ConfigMap holds %s (%d bytes)" % (dashboard, len(want)))


def cmd_doc(values):
    import re
    with open(values) as f:
        lines = f.read().splitlines()
    undocumented = []
    covered_indent = None  # inside the subtree of a commented mapping or a list
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if covered_indent is not None:
            if indent > covered_indent or line.lstrip().startswith("- "):
                continue
            covered_indent = None
        m = re.match(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$", line)
        if not m:
            continue
        documented = i > 0 and lines[i - 1].lstrip().startswith("#")
        opener = m.group(3).strip() == ""
        if documented and opener:
            covered_indent = indent
        elif not documented and not opener:
            undocumented.append("%s:%d: %s" % (values, i + 1, line.strip()))
    if undocumented:
        fail("values without a comment above them:\n  " + "\n  ".join(undocumented))
    print("every value in %s has a comment" % values)


TABLE_START = "<!-- values-table:start: generated from values.yaml by `make chart-readme`; do not edit -->"
TABLE_END = "<!-- values-table:end -->"


def values_rows(values):
    """One row (dotted key, default, description) per value with a "# --" comment (helm-docs style).

    A "# --" comment on a mapping or list documents it whole (its subtree gets no rows of its own);
    the lines after "# --" up to the key continue the description. Fails when a value is in no row.
    """
    with open(values) as f:
        text = f.read()
    data = yaml.safe_load(text)
    rows, stack, comment, skip_indent = [], [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if indent > skip_indent or stripped.startswith("- "):
                comment = []
                continue
            skip_indent = None
        m = re.match(r"^([A-Za-z0-9_.-]+):(.*)$", stripped)
        if not m:
            comment = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [m.group(1)]
        opener = m.group(2).strip() == ""
        starts = [i for i, c in enumerate(comment) if c == "# --" or c.startswith("# -- ")]
        if starts:
            first = starts[-1]
            desc = " ".join([comment[first][4:].strip()] + [c.lstrip("#").strip() for c in comment[first + 1:]])
            value = data
            for k in path:
                value = value[k]
            rows.append((".".join(path), value, desc))
            if opener:
                skip_indent = indent
        elif opener:
            stack.append((indent, m.group(1)))
        comment = []

    def leaves(node, prefix):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                yield from leaves(v, prefix + [k])
        else:
            yield ".".join(prefix)
    keys = [r[0] for r in rows]
    missing = [leaf for leaf in leaves(data, []) if not any(leaf == k or leaf.startswith(k + ".") for k in keys)]
    if missing:
        fail("values of %s with no \"# --\" comment (theirs or a parent's): %s" % (values, ", ".join(missing)))
    return rows


def values_table(values):
    def cell(s, code=False):
        # "|" ends a cell even in code; "<" outside code would start an HTML tag.
        parts = s.replace("|", "\\|").split("`")
        return "`".join(p if code or i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))

    def type_of(v):
        for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list"), (dict, "object")):
            if isinstance(v, t):
                return name
        return "null"
    out = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key, value, desc in values_rows(values):
        out.append("| `%s` | %s | `%s` | %s |" % (key, type_of(value), cell(json.dumps(value), code=True), cell(desc)))
    return "\n".join(out) + "\n"


def cmd_readme(values, readme, *flags):
    if flags not in ((), ("--write",)):
        fail(__doc__)
    with open(readme) as f:
        text = f.read()
    if text.count(TABLE_START) != 1 or text.count(TABLE_END) != 1:
        fail("%s: expected one line %r and one %r around the values table" % (readme, TABLE_START, TABLE_END))
    head, rest = text.split(TABLE_START + "\n", 1)
    table, tail = rest.split(TABLE_END, 1)
    want = values_table(values)
    if flags:
        with open(readme, "w") as f:
            f.write(head + TABLE_START + "\n" + want + TABLE_END + tail)
        print("wrote the values table of %s (%d rows)" % (readme, want.count("\n") - 2))
        return
    if table != want:
        import difflib
        sys.stderr.writelines(difflib.unified_diff(table.splitlines(True), want.splitlines(True), readme, "from " + values))
        fail("the values table of %s is not the one %s gives: run `make chart-readme`" % (readme, values))
    print("the values table of %s lists all %d rows of %s" % (readme, want.count("\n") - 2, values))


if __name__ == "__main__":
    cmds = {"split": (cmd_split, 2), "kinds": (cmd_kinds, 1), "grace": (cmd_grace, 1), "doc": (cmd_doc, 1), "compare": (cmd_compare, 2), "settings": (cmd_settings, 2), "rules": (cmd_rules, 3), "dashboard": (cmd_dashboard, 2), "readme": (cmd_readme, (2, 3)), "get": (cmd_get, tuple(range(2, 20))), "meta": (cmd_meta, 3), "env": (cmd_env, 1), "checkov": (cmd_checkov, 2)}
    nargs = cmds.get(sys.argv[1], (None, -1))[1] if len(sys.argv) >= 2 else -1
    if len(sys.argv) - 2 not in (nargs if isinstance(nargs, tuple) else (nargs,)):
        fail(__doc__)
    fn, _ = cmds[sys.argv[1]]
    fn(*sys.argv[2:])
