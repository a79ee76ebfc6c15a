#!/usr/bin/env python3
"""Checks the Dockerfile's rules without a Docker engine (Python 3 standard library only).

    python3 scripts/check_dockerfile.py [Dockerfile] [--dockerignore PATH] [--context DIR]

Prints one line per rule, `ok` or `FAIL`, and exits 1 when any rule fails (2 on usage errors).
Rules (issue 4): multi-stage, pinned base images, the Rust builder >= the AWS SDK's minimum,
a locked release build; in every image stage (the last, and any other that no stage builds on
or copies from) a numeric non-root USER, EXPOSE 8040 and 8041 and ENTRYPOINT/CMD in exec form;
no secrets (ENV/ARG values, copied .env or key files); a .dockerignore that keeps target/,
.git/ and .env files out of the build context; and every file Cargo.toml names as a target
present at each `cargo build` (cargo refuses to build anything when one is missing, e.g. a
[[bench]] whose source stays out of the context).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import posixpath
import sys
from pathlib import Path

MIN_RUST = (1, 94, 1)  # the AWS SDK's minimum supported Rust version
PORTS = ("8040", "8041")
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE)", re.I)
SECRET_FILE = re.compile(
    r"(^|/)(\.env(\..*)?|.*\.pem|.*\.key|id_rsa.*|id_ed25519.*|credentials|\.aws|\.ssh|\.netrc|\.npmrc|\.pypirc)$"
)
MUST_IGNORE = (".env", ".env.local", "target", ".git", ".venv")
# A command that runs cargo build: directly, or through scripts/pgo.sh (the profile-guided build).
BUILDS = re.compile(r"\bcargo\s+build\b|(^|[\s/])scripts/pgo\.sh\b")


class Instr:
    def __init__(self, line: int, cmd: str, args: str):
        self.line, self.cmd, self.args = line, cmd.upper(), args.strip()

    def __repr__(self) -> str:
        return f"line {self.line}: {self.cmd} {self.args}"


def parse(text: str) -> list[Instr]:
    """Dockerfile instructions with continuation lines joined; comments dropped."""
    out: list[Instr] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):  # comment lines inside a continuation are ignored
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        parts = buf.split(None, 1)
        out.append(Instr(start, parts[0], parts[1] if len(parts) > 1 else ""))
        buf = ""
    if buf:
        parts = buf.split(None, 1)
        out.append(Instr(start, parts[0], parts[1] if len(parts) > 1 else ""))
    return out


def stages(instrs: list[Instr]) -> list[dict]:
    """[{image, name, line, instrs}] per FROM; instructions before the first FROM are ARGs only."""
    result: list[dict] = []
    for ins in instrs:
        if ins.cmd == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            image = words[0] if words else ""
            # Stage names are case-insensitive in Docker.
            name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
            result.append({"image": image, "name": name, "line": ins.line, "instrs": []})
        elif result:
            result[-1]["instrs"].append(ins)
    return result


def split_ref(ref: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    last = ref.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        repo_last, tag = last.split(":", 1)
        ref = ref[: len(ref) - len(last)] + repo_last
    return ref, tag, digest


def pinned(ref: str) -> tuple[bool, str]:
    if "$" in ref:
        return False, f"{ref}: uses a build variable; name the image literally"
    repo, tag, digest = split_ref(ref)
    if digest:
        if re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            return True, f"{ref}: digest"
        return False, f"{ref}: malformed digest"
    if not tag:
        return False, f"{ref}: no tag (means :latest)"
    if tag == "latest":
        return False, f"{ref}: ':latest' is not a pin"
    # A version in the tag (rust:1.95.0-bookworm) or a release in the image's name
    # (distroless publishes only cc-debian12:{latest,nonroot,...}: Debian 12 is the pin).
    if re.search(r"\d", tag) or re.search(r"\d+$", repo.rsplit("/", 1)[-1]):
        return True, f"{ref}: tag"
    return False, f"{ref}: tag '{tag}' names no version; pin a version tag or a digest"


def rust_version(ref: str) -> tuple[int, ...] | None:
    repo, tag, _ = split_ref(ref)
    if repo.rsplit("/", 1)[-1] != "rust" or not tag:
        return None
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", tag)
    if not m:
        return None
    return (int(m[1]), int(m[2]), int(m[3] or 0))


def env_pairs(ins: Instr) -> list[tuple[str, str]]:
    """(name, value) of an ENV or ARG instruction (value '' when none is given)."""
    args = ins.args
    if ins.cmd == "ENV" and "=" not in args.split(None, 1)[0]:
        parts = args.split(None, 1)  # legacy `ENV NAME value`
        return [(parts[0], parts[1] if len(parts) > 1 else "")]
    pairs = []
    for tok in re.findall(r'(?:[^\s"\']+|"[^"]*"|\'[^\']*\')+', args):
        name, _, value = tok.partition("=")
        pairs.append((name, value.strip("\"'")))
    return pairs


def exec_form(args: str) -> bool:
    try:
        v = json.loads(args)
    except ValueError:
        return False
    return isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics, simplified: last match wins, parents count."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip().strip("/")
        if p.startswith("./"):
            p = p[2:]
        p = p.replace("**/", "*/").replace("/**", "/*")
        if any(fnmatch.fnmatchcase(c, p) for c in candidates):
            result = not neg
    return result


def tomllib_load(manifest: Path) -> dict:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:
        raise SystemExit(f"check_dockerfile: reading {manifest} needs Python >= 3.11 (tomllib)")
    return tomllib.loads(manifest.read_text())


def cargo_targets(manifest: Path) -> list[tuple[str, list[str]]]:
    """(target, accepted paths) of every file cargo must find before it builds anything: the
    manifest and lock file, explicit [lib], [[bin]], [[bench]], [[test]] and [[example]]
    entries, and the build script."""
    try:
        import tomllib  # Python >= 3.11
    except ImportError:
        raise SystemExit(f"check_dockerfile: reading {manifest} needs Python >= 3.11 (tomllib)")
    data = tomllib.loads(manifest.read_text())
    pkg = data.get("package", {})
    out: list[tuple[str, list[str]]] = [("the manifest", ["Cargo.toml"]), ("the lock file", ["Cargo.lock"])]
    if "lib" in data:
        out.append(("[lib]", [data["lib"].get("path", "src/lib.rs")]))
    dirs = {"bin": "src/bin", "bench": "benches", "test": "tests", "example": "examples"}
    for kind, folder in dirs.items():
        for t in data.get(kind, []):
            name = t.get("name", "")
            if "path" in t:
                paths = [t["path"]]
            elif kind == "bin" and name == pkg.get("name"):
                paths = ["src/main.rs", f"{folder}/{name}.rs", f"{folder}/{name}/main.rs"]
            else:
                paths = [f"{folder}/{name}.rs", f"{folder}/{name}/main.rs"]
            out.append((f"[[{kind}]] {name}", [posixpath.normpath(x) for x in paths]))
    build = pkg.get("build")
    if isinstance(build, str):
        out.append(("build script", [posixpath.normpath(build)]))
    elif build is not False and (manifest.parent / "build.rs").is_file():
        out.append(("build script", ["build.rs"]))
    # Cargo loads every workspace member before it builds any: each member's manifest and the
    # targets it names must be there too (its auto-detected build script need not be: a build
    # of another package never runs it).
    for member in data.get("workspace", {}).get("members", []):
        if posixpath.normpath(member) == ".":
            continue
        for name, paths in cargo_targets(manifest.parent / member / "Cargo.toml"):
            if name in ("the lock file", "build script"):
                continue
            out.append((f"{member}: {name}", [posixpath.normpath(posixpath.join(member, x)) for x in paths]))
    return out


def stage_refs(ins: Instr) -> list[str]:
    """Stages an instruction reads from: COPY --from=X, RUN --mount=...,from=X (lowercased)."""
    refs = re.findall(r"--from=([^\s,]+)", ins.args) if ins.cmd in ("COPY", "ADD") else []
    if ins.cmd == "RUN":
        for mount in re.findall(r"--mount=(\S+)", ins.args):
            refs += re.findall(r"(?:^|,)from=([^,]+)", mount)
    return [r.lower() for r in refs]


def stage_by_ref(st: list[dict], ref: str) -> dict | None:
    """The stage a FROM or --from names: by name, or by index."""
    ref = ref.lower()
    if ref.isdigit():
        return st[int(ref)] if int(ref) < len(st) else None
    return next((s for s in st if s["name"] == ref), None)


def parent_of(st: list[dict], stage: dict) -> dict | None:
    """The earlier stage a stage is built FROM, if any (FROM takes names, not indexes)."""
    ref = stage["image"].lower()
    return None if ref.isdigit() else stage_by_ref(st, ref)


def runtime_stages(st: list[dict]) -> list[dict]:
    """The stages that are images (the last, the default, and any `--target` choice): those no
    other stage builds on (FROM) or reads from (COPY --from, RUN --mount from=)."""
    used = set()
    for s in st:
        parent = parent_of(st, s)
        if parent:
            used.add(id(parent))
        for i in s["instrs"]:
            for ref in stage_refs(i):
                if (src := stage_by_ref(st, ref)) is not None:
                    used.add(id(src))
    return [s for s in st if s is st[-1] or id(s) not in used]


def lineage(st: list[dict], stage: dict) -> list[Instr]:
    """A stage's instructions preceded by those of the stages it is built FROM, so USER, EXPOSE,
    ENTRYPOINT and CMD set in a parent stage count."""
    chain, seen = [], set()
    while stage is not None and id(stage) not in seen:
        seen.add(id(stage))
        chain.append(stage)
        stage = parent_of(st, stage)
    return [i for s in reversed(chain) for i in s["instrs"]]


def builder_gaps(st: list[dict], context: Path, patterns: list[str],
                 targets: list[tuple[str, list[str]]]) -> list[str]:
    """Targets missing at each `cargo build`, relative to its WORKDIR. Files come from COPY (from
    the context, if they exist and .dockerignore lets them in, or from an earlier stage), or
    from RUN commands that write them (`> path`, `touch path`), and go with `rm`; a stage FROM
    an earlier one starts with that one's files. Paths are kept absolute."""
    after: dict[int, tuple[set[str], str]] = {}
    gaps: list[str] = []
    for stage in st:
        parent = parent_of(st, stage)
        have, workdir = after.get(id(parent), (set(), "/")) if parent else (set(), "/")
        after[id(stage)] = stage_files(st, stage, set(have), workdir, after, context, patterns, targets, gaps)
    return list(dict.fromkeys(gaps))  # one RUN may build twice (if/else): each gap once


def stage_files(st: list[dict], stage: dict, have: set[str], workdir: str,
                after: dict[int, tuple[set[str], str]], context: Path, patterns: list[str],
                targets: list[tuple[str, list[str]]], gaps: list[str]) -> tuple[set[str], str]:
    """One stage of builder_gaps: its files and WORKDIR after it; its gaps appended to gaps."""

    def absolute(path: str) -> str:
        return posixpath.normpath(posixpath.join(workdir, path))

    def present(path: str) -> bool:
        return absolute(path) in have

    def into_dir(dest: str, n_srcs: int) -> bool:
        d = absolute(dest)
        return dest.endswith("/") or n_srcs > 1 or d == workdir or any(h.startswith(d + "/") for h in have)

    for ins in stage["instrs"]:
        if ins.cmd == "WORKDIR":
            workdir = absolute(ins.args)
        elif ins.cmd in ("COPY", "ADD"):
            words = json.loads(ins.args) if exec_form(ins.args) else [
                w for w in ins.args.split() if not w.startswith("--")]
            srcs, dest = words[:-1], words[-1]
            refs = stage_refs(ins)
            if refs:  # from an earlier stage: its files under each source path
                src_stage = stage_by_ref(st, refs[0])
                files = after.get(id(src_stage), (set(), "/"))[0] if src_stage else set()
                for src in (posixpath.normpath(x) for x in srcs):
                    inner = [f for f in files if f.startswith(src.rstrip("/") + "/")]
                    if inner:  # a directory: its contents go into dest
                        have.update(absolute(posixpath.join(dest, posixpath.relpath(f, src))) for f in inner)
                    elif src in files:
                        have.add(absolute(posixpath.join(dest, posixpath.basename(src))
                                          if into_dir(dest, len(srcs)) else dest))
                continue
            for src in (posixpath.normpath(x) for x in srcs):
                path = context / src
                if not path.exists() or ignored(src, patterns):
                    continue
                if path.is_dir():  # Docker copies a directory's contents into dest
                    for f in path.rglob("*"):
                        inner = f.relative_to(context).as_posix()
                        if f.is_file() and not ignored(inner, patterns):
                            have.add(absolute(posixpath.join(dest, f.relative_to(path).as_posix())))
                elif into_dir(dest, len(srcs)):
                    have.add(absolute(posixpath.join(dest, posixpath.basename(src))))
                else:
                    have.add(absolute(dest))
        elif ins.cmd == "RUN":
            for cmd in re.split(r"&&|;|\|\|", ins.args):
                words = [w for w in cmd.split() if not w.startswith("--mount=")]
                if not words:
                    continue
                for m in re.finditer(r"(?:^|\s)((?:\./)?scripts/[\w.-]+)", cmd):
                    if not present(m[1]):
                        gaps.append(f"line {ins.line}: {m[1]} run in {workdir} but not there")
                if BUILDS.search(cmd):
                    for name, paths in targets:
                        if not any(present(p) for p in paths):
                            gaps.append(f"line {ins.line}: cargo build in {workdir} without {name} ({' or '.join(paths)})")
                elif words[0] == "rm":
                    for w in words[1:]:
                        if not w.startswith("-"):
                            gone = absolute(w)
                            have -= {h for h in have
                                     if h == gone or h.startswith(gone + "/") or fnmatch.fnmatchcase(h, gone)}
                elif words[0] == "touch":
                    have.update(absolute(w) for w in words[1:] if not w.startswith("-"))
                for m in re.finditer(r">\s*([^\s>&|;]+)", cmd):
                    have.add(absolute(m[1]))
    return have, workdir


def check(dockerfile: Path, dockerignore: Path, context: Path) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []

    def rule(name: str, ok: bool, detail: str) -> None:
        results.append((name, ok, detail))

    instrs = parse(dockerfile.read_text())
    st = stages(instrs)
    names = {s["name"] for s in st if s["name"]}  # lowercase

    rule("multi-stage", len(st) >= 2,
         f"{len(st)} FROM stages" if len(st) >= 2 else f"{len(st)} FROM stage(s); need a builder and a runtime")
    if not st:
        return results
    images = runtime_stages(st)

    bad = []
    seen = []
    for s in st:
        ref = s["image"]
        if ref.lower() in names or ref == "scratch":
            continue
        ok, why = pinned(ref)
        seen.append(why)
        if not ok:
            bad.append(f"line {s['line']}: {why}")
    rule("pinned-base-images", not bad, "; ".join(bad) if bad else "; ".join(seen))

    versions = [(s, rust_version(s["image"])) for s in st[:-1]]
    rust = [(s, v) for s, v in versions if v is not None]
    if not rust:
        rule("rust-builder-version", False, "no builder stage FROM rust:<version>")
    else:
        low = [f"{s['image']} < {'.'.join(map(str, MIN_RUST))}" for s, v in rust if v < MIN_RUST]
        rule("rust-builder-version", not low,
             "; ".join(low) if low else ", ".join(f"{s['image']} >= {'.'.join(map(str, MIN_RUST))}" for s, _ in rust))

    builds = [i for s in st[:-1] for i in s["instrs"]
              if i.cmd == "RUN" and re.search(r"cargo build\b[^&|;]*--release", i.args)
              and "--locked" in i.args]
    rule("release-build", bool(builds),
         "cargo build --release --locked in a builder stage" if builds
         else "no 'cargo build --release --locked' in a builder stage")

    # Only the worker ships: every build names its package, so a workspace member (the
    # simulators, the test tooling) is never compiled into the image's builder by accident.
    # (scripts/pgo.sh builds the simulators on purpose, for its training run; image stages
    # copy only /reservation-worker from the builders.)
    package = tomllib_load(context / "Cargo.toml").get("package", {}).get("name", "")
    calls = [(i.line, m[0]) for s in st for i in s["instrs"] if i.cmd == "RUN"
             for m in re.finditer(r"cargo\s+build\b[^&|;]*", i.args)]
    unnamed = [f"line {line}: {cmd.strip()}" for line, cmd in calls
               if not re.search(rf"(-p|--package)[ =]{re.escape(package)}\b", cmd)]
    rule("worker-only-build", bool(calls) and not unnamed,
         "; ".join(unnamed) if unnamed else f"every cargo build names -p {package}")

    user_ok, expose_ok, entry_ok = [], [], []
    user_bad, expose_bad, entry_bad = [], [], []
    for img in images:
        where = f"stage {img['name'] or img['image']}"
        instrs_of = lineage(st, img)
        users = [i for i in instrs_of if i.cmd == "USER"]
        if not users:
            user_bad.append(f"{where} has no USER (runs as root)")
        else:
            u = users[-1].args
            m = re.fullmatch(r"(\d+)(?::(\d+))?", u)
            if not m:
                user_bad.append(f"{where}: USER {u}: not numeric uid[:gid] (runAsNonRoot cannot verify a name)")
            elif int(m[1]) == 0 or (m[2] is not None and int(m[2]) == 0):
                user_bad.append(f"{where}: USER {u}: uid/gid 0 is root")
            else:
                user_ok.append(f"{where}: USER {u}")

        exposed = set()
        for i in instrs_of:
            if i.cmd == "EXPOSE":
                exposed.update(p.split("/")[0] for p in i.args.split())
        missing = [p for p in PORTS if p not in exposed]
        if missing:
            expose_bad.append(f"{where}: missing EXPOSE {' '.join(missing)}")
        else:
            expose_ok.append(f"{where}: EXPOSE {' '.join(sorted(exposed))}")

        ep = [i for i in instrs_of if i.cmd == "ENTRYPOINT"][-1:]
        cmd = [i for i in instrs_of if i.cmd == "CMD"][-1:]
        problems = []
        if not ep and not cmd:
            problems.append(f"{where} has no ENTRYPOINT or CMD")
        for i in ep + cmd:
            if not exec_form(i.args):
                problems.append(f"line {i.line}: {i.cmd} {i.args} is shell form; use a JSON array")
        entry_bad += problems
        if not problems:
            entry_ok.append(f"{where}: " + " ".join(f"{i.cmd} {i.args}" for i in ep + cmd))
    rule("non-root-numeric-user", not user_bad, "; ".join(user_bad or user_ok))
    rule("expose-ports", not expose_bad, "; ".join(expose_bad or expose_ok))
    rule("exec-form-entrypoint", not entry_bad, "; ".join(entry_bad or entry_ok))

    leaks = []
    for i in instrs:
        if i.cmd in ("ENV", "ARG"):
            for name, value in env_pairs(i):
                if SECRET_NAME.search(name) and value:
                    leaks.append(f"line {i.line}: {i.cmd} {name} has a value")
        if i.cmd in ("COPY", "ADD"):
            words = [w for w in i.args.split() if not w.startswith("--")]
            if exec_form(i.args):
                words = json.loads(i.args)
            for src in words[:-1]:
                if SECRET_FILE.search(src.rstrip("/")):
                    leaks.append(f"line {i.line}: {i.cmd} {src} copies a secret file")
    rule("no-secrets", not leaks, "; ".join(leaks) if leaks else "no secret-named ENV/ARG values, no .env/key files copied")

    pats = ([l.strip() for l in dockerignore.read_text().splitlines()
             if l.strip() and not l.strip().startswith("#")] if dockerignore.exists() else [])
    if not dockerignore.exists():
        rule("dockerignore", False, f"{dockerignore} missing: the build context would include .env files and target/")
    else:
        kept = [p for p in MUST_IGNORE if not ignored(p, pats)]
        rule("dockerignore", not kept,
             f"does not exclude: {', '.join(kept)}" if kept else f"excludes {', '.join(MUST_IGNORE)}")

    manifest = context / "Cargo.toml"
    if not manifest.is_file():
        rule("cargo-targets", False, f"{manifest} not found: pass the build context with --context")
    else:
        targets = cargo_targets(manifest)
        builds = [s for s in st if any(i.cmd == "RUN" and BUILDS.search(i.args) for i in s["instrs"])]
        gaps = builder_gaps(st, context, pats, targets)
        rule("cargo-targets", bool(builds) and not gaps,
             "; ".join(gaps) if gaps else
             (f"the {len(targets)} files cargo needs ({', '.join(n for n, _ in targets)}) present at every cargo build" if builds
              else "no cargo build in a builder stage"))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dockerfile", nargs="?", default="Dockerfile")
    ap.add_argument("--dockerignore", help="default: .dockerignore beside the Dockerfile")
    ap.add_argument("--context", help="the build context (holds Cargo.toml); default: the Dockerfile's directory")
    a = ap.parse_args()
    df = Path(a.dockerfile)
    if not df.is_file():
        print(f"check_dockerfile: {df} not found", file=sys.stderr)
        return 2
    di = Path(a.dockerignore) if a.dockerignore else df.parent / ".dockerignore"
    ctx = Path(a.context) if a.context else df.parent
    results = check(df, di, ctx)
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    failed = [n for n, ok, _ in results if not ok]
    print(f"{df}: {len(results) - len(failed)}/{len(results)} rules ok" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
