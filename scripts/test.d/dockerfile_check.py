#!/usr/bin/env python3
"""Static checks of docker/*.Dockerfile that hadolint cannot make, because they need the repository.

    dockerfile_check.py [--context DIR] [--metadata FILE] DOCKERFILE...

For every Dockerfile (the build context is DIR, the repository root by default):
  * a local COPY/ADD source exists in the repository (tracked or new, not git-ignored) and is not
    excluded by .dockerignore (or <Dockerfile>.dockerignore, which BuildKit prefers);
  * COPY --from= names a stage defined before it, and a path that stage makes (a WORKDIR, COPY
    destination or absolute path in its RUN lines, or under one); a stage that only aliases an
    image (no instructions) is taken at its word;
  * `cargo build` runs with --locked and --release, and its packages, binaries and features exist
    (`cargo metadata --no-deps`; the stage's ARG defaults expanded); the stage that runs it has Cargo.toml, Cargo.lock and every
    workspace member and every path in the root Cargo.toml's [patch] tables copied to the same
    place relative to the workspace root;
  * every final stage (one no other stage builds on) ends with a numeric non-root USER and an
    exec-form ENTRYPOINT naming a file the stage copies in;
  * ARG VERSION, when given a default, is the version of the crates the file builds.
Stdlib only. Exit status 1 and one `file:line: message` per problem when anything is wrong.
"""

import argparse
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    index: int
    line: int
    image: str
    name: str | None
    parent: "Stage | None" = None
    instructions: list = field(default_factory=list)

    def label(self):
        return self.name or f"{self.index} ({self.image})"

    def chain(self):
        """This stage and the stages it is built FROM, nearest first."""
        stage = self
        while stage is not None:
            yield stage
            stage = stage.parent


# --- Dockerfile parsing ------------------------------------------------------------------------

def parse_instructions(text):
    """Instructions with their first line number; continuations joined, comments dropped."""
    out, buf, start = [], [], 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and buf):
            continue  # comments, and blank lines inside a continued instruction
        if not stripped:
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].rstrip())
            continue
        buf.append(stripped)
        joined = " ".join(buf)
        buf = []
        keyword, _, rest = joined.partition(" ")
        out.append(Instruction(start, keyword.upper(), rest.strip()))
    if buf:
        keyword, _, rest = " ".join(buf).partition(" ")
        out.append(Instruction(start, keyword.upper(), rest.strip()))
    return out


def split_flags(args):
    """(`--flag=value` words at the front, the rest) of an instruction's arguments."""
    flags, rest = {}, args
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        flags.setdefault(key, []).append(value)
        rest = rest.lstrip()
    return flags, rest


def parse_stages(instructions):
    stages, global_args = [], {}
    for ins in instructions:
        if ins.keyword == "FROM":
            _, rest = split_flags(ins.args)
            words = rest.split()
            name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
            image = words[0] if words else ""
            parent = next((s for s in stages if s.name == image.lower()), None)
            stages.append(Stage(len(stages), ins.line, image, name, parent))
        elif not stages:
            if ins.keyword == "ARG":
                key, _, value = ins.args.partition("=")
                global_args[key.strip()] = value.strip().strip('"')
        else:
            stages[-1].instructions.append(ins)
    return stages, global_args


def exec_form(args):
    """The JSON array of an exec-form CMD/ENTRYPOINT/COPY, or None for shell form."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def copy_parts(args):
    flags, rest = split_flags(args)
    words = exec_form(rest) or rest.split()
    return flags, words[:-1], (words[-1] if words else "")


# --- the build context -------------------------------------------------------------------------

class Context:
    """Files a clean checkout has (git: tracked plus new, not ignored), and .dockerignore."""

    def __init__(self, root):
        self.root = root
        self.files = self._list_files(root)
        self.dirs = {"."}
        for f in self.files:
            parent = posixpath.dirname(f)
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)

    @staticmethod
    def _list_files(root):
        try:
            out = subprocess.run(
                ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                check=True, capture_output=True).stdout.decode()
            names = [n for n in out.split("\0") if n]
            return {n for n in names if os.path.lexists(os.path.join(root, n))}
        except (OSError, subprocess.CalledProcessError):
            found = set()
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if d != ".git"]
                for f in filenames:
                    found.add(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
            return found


def ignore_rules(path):
    """(.dockerignore path, [(negated, regex)]) in file order; the last match wins."""
    rules = []
    if not os.path.isfile(path):
        return rules
    for raw in open(path, encoding="utf-8"):
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = posixpath.normpath(pattern.lstrip("!").strip()).lstrip("/")
        rules.append((negated, re.compile(glob_regex(pattern))))
    return rules


def glob_regex(pattern):
    """Go filepath.Match syntax plus Docker's `**` (any number of directories)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + r"\Z"


def excluded(rules, path):
    """Whether .dockerignore keeps `path` out: a pattern matching it or a parent directory."""
    prefixes, parent = [path], posixpath.dirname(path)
    while parent:
        prefixes.append(parent)
        parent = posixpath.dirname(parent)
    result = False
    for negated, regex in rules:
        if any(regex.match(p) for p in prefixes):
            result = not negated
    return result


# --- checks ------------------------------------------------------------------------------------

class Checker:
    def __init__(self, context, metadata):
        self.ctx = context
        self.packages = {p["name"]: p for p in metadata["packages"]}
        members = set(metadata["workspace_members"])
        root = metadata["workspace_root"]
        self.member_dirs = sorted(
            posixpath.relpath(posixpath.dirname(p["manifest_path"]), root)
            for p in metadata["packages"] if p["id"] in members)
        # [patch.<registry>] path crates: cargo loads them for every build, like the members.
        with open(os.path.join(root, "Cargo.toml"), "rb") as f:
            patches = tomllib.load(f).get("patch", {})
        self.member_dirs += sorted(
            posixpath.normpath(dep["path"])
            for registry in patches.values() for dep in registry.values() if "path" in dep)
        defaults = set(metadata.get("workspace_default_members") or members)
        self.default_packages = [p["name"] for p in metadata["packages"] if p["id"] in defaults]
        self.errors = []

    def error(self, where, line, message):
        self.errors.append(f"{where}:{line}: {message}")

    def check_file(self, dockerfile):
        text = open(dockerfile, encoding="utf-8").read()
        stages, global_args = parse_stages(parse_instructions(text))
        own = dockerfile + ".dockerignore"
        rules = ignore_rules(own if os.path.isfile(own) else os.path.join(self.ctx.root, ".dockerignore"))
        if not stages:
            self.error(dockerfile, 1, "no FROM: not a Dockerfile")
            return
        built = []
        for stage in stages:
            workdir = self.check_stage(dockerfile, stage, stages, rules, global_args)
            built += self.check_cargo(dockerfile, stage, workdir)
        versions = {self.packages[p]["version"] for p in built if p in self.packages}
        for stage in self.final_stages(stages):
            self.check_final(dockerfile, stage, versions)

    def check_stage(self, where, stage, stages, rules, global_args):
        workdir = self.workdir(stage.parent) if stage.parent else "/"
        for ins in stage.instructions:
            if ins.keyword == "WORKDIR":
                workdir = posixpath.join(workdir, ins.args)
            elif ins.keyword in ("COPY", "ADD"):
                flags, sources, _ = copy_parts(ins.args)
                if "from" in flags:
                    self.check_from(where, ins, stage, stages, flags["from"][0], sources)
                else:
                    for src in sources:
                        self.check_source(where, ins, src, rules, global_args)
        return workdir

    @staticmethod
    def workdir(stage):
        chain = list(stage.chain())[::-1]
        workdir = "/"
        for s in chain:
            for ins in s.instructions:
                if ins.keyword == "WORKDIR":
                    workdir = posixpath.join(workdir, ins.args)
        return workdir

    def check_source(self, where, ins, src, rules, global_args):
        if re.match(r"^(https?|git)://|^git@", src):
            return  # remote ADD: hadolint's business
        for key, value in global_args.items():
            src = src.replace("${" + key + "}", value).replace("$" + key, value)
        if "$" in src:
            self.error(where, ins.line, f"{ins.keyword} source {src}: cannot resolve the variable")
            return
        path = posixpath.normpath(src.lstrip("/")) if src.strip("/") else "."
        if path.startswith(".."):
            self.error(where, ins.line, f"{ins.keyword} source {src} is outside the build context")
            return
        if any(c in path for c in "*?["):
            regex = re.compile(glob_regex(path))
            hits = [f for f in self.ctx.files | self.ctx.dirs if regex.match(f)]
            if not hits:
                self.error(where, ins.line, f"{ins.keyword} source {src} matches nothing in the repository")
            elif all(excluded(rules, f) for f in hits):
                self.error(where, ins.line, f"{ins.keyword} source {src}: everything it matches is excluded by .dockerignore")
            return
        if path not in self.ctx.files and path not in self.ctx.dirs:
            self.error(where, ins.line, f"{ins.keyword} source {src} does not exist in the repository")
        elif excluded(rules, path):
            self.error(where, ins.line, f"{ins.keyword} source {src} is excluded by .dockerignore")
        elif path in self.ctx.dirs:
            inside = [f for f in self.ctx.files if path == "." or f.startswith(path + "/")]
            if all(excluded(rules, f) for f in inside):
                self.error(where, ins.line, f"{ins.keyword} source {src}: every file in it is excluded by .dockerignore")

    def check_from(self, where, ins, stage, stages, ref, sources):
        earlier = stages[:stage.index]
        source = next((s for s in earlier if s.name == ref.lower()), None)
        if source is None and ref.isdigit() and int(ref) < stage.index:
            source = stages[int(ref)]
        if source is None:
            known = ", ".join(s.label() for s in earlier) or "none"
            self.error(where, ins.line, f"COPY --from={ref}: no stage {ref} defined before this one "
                       f"(stages so far: {known}); name an image in its own FROM … AS stage")
            return
        if not any(s.instructions for s in source.chain()):
            return  # an image alias: its files come from the image
        made, caches = self.made_paths(source), self.cache_mounts(source)
        for src in sources:
            path = posixpath.normpath(posixpath.join(self.workdir(source), src))
            cache = next((c for c in caches if path == c or path.startswith(c + "/")), None)
            if cache:
                self.error(where, ins.line, f"COPY --from={ref} {src}: {cache} is a cache mount in "
                           f"stage {source.label()}, so nothing under it is in the stage's image")
            elif not any(path == m or path.startswith(m.rstrip("/") + "/") or m.startswith(path + "/")
                       for m in made):
                self.error(where, ins.line, f"COPY --from={ref} {src}: stage {source.label()} makes no "
                           "such path (no WORKDIR, COPY destination or RUN path names it)")

    def cache_mounts(self, stage):
        targets = set()
        for s in stage.chain():
            for ins in s.instructions:
                for mount in split_flags(ins.args)[0].get("mount", []) if ins.keyword == "RUN" else []:
                    opts = dict(kv.partition("=")[::2] for kv in mount.split(","))
                    target = opts.get("target") or opts.get("dst") or opts.get("destination")
                    if opts.get("type") == "cache" and target:
                        targets.add(posixpath.normpath(posixpath.join(self.workdir(s), target)))
        return targets

    def made_paths(self, stage):
        made = set()
        for s in stage.chain():
            workdir = self.workdir(s)
            for ins in s.instructions:
                if ins.keyword == "WORKDIR":
                    made.add(posixpath.normpath(posixpath.join("/", ins.args)))
                elif ins.keyword in ("COPY", "ADD"):
                    made.add(posixpath.normpath(posixpath.join(workdir, copy_parts(ins.args)[2])))
                elif ins.keyword == "RUN":
                    _, command = split_flags(ins.args)
                    for p in re.findall(r"(?:^|(?<=[\s='\"]))(/[^\s;&|'\"]+)", command):
                        made.add(posixpath.normpath(p))
        made.add(self.workdir(stage))
        made.discard("/")
        return made

    # --- cargo ---------------------------------------------------------------------------------

    def check_cargo(self, where, stage, workdir):
        built = []
        args = {}  # the stage's ARG defaults, expanded in cargo commands as the build would
        for ins in stage.instructions:
            if ins.keyword == "ARG":
                key, _, value = ins.args.partition("=")
                args[key.strip()] = value.strip().strip('"')
            if ins.keyword != "RUN":
                continue
            _, command = split_flags(ins.args)
            command = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                             lambda m: args.get(m.group(1) or m.group(2), m.group(0)), command)
            for part in re.split(r"&&|\|\||;|\|", command):
                try:
                    words = shlex.split(part)
                except ValueError:
                    continue
                while words and re.match(r"^\w+=", words[0]):
                    words.pop(0)  # VAR=value prefixes
                if len(words) >= 2 and words[0] == "cargo" and words[1].startswith("+"):
                    words.pop(1)
                if words[:2] == ["cargo", "build"]:
                    built += self.check_cargo_build(where, ins.line, words[2:])
                    self.check_workspace_copied(where, ins.line, stage, workdir)
        return built

    def check_cargo_build(self, where, line, words):
        opts = {"package": [], "bin": [], "features": [], "flags": set(), "profile": None}
        i = 0
        while i < len(words):
            word = words[i]
            key, eq, value = word.partition("=")
            long_names = {"--package": "package", "-p": "package", "--bin": "bin",
                          "--features": "features", "-F": "features", "--profile": "profile"}
            if key in long_names:
                if not eq:
                    i += 1
                    value = words[i] if i < len(words) else ""
                target = long_names[key]
                if target == "profile":
                    opts["profile"] = value
                else:
                    opts[target] += [v for v in re.split(r"[ ,]+", value) if v]
            elif re.match(r"^-[pF].", word):
                opts["package" if word[1] == "p" else "features"].append(word[2:])
            else:
                opts["flags"].add(word)
            i += 1
        if "--locked" not in opts["flags"] and "--frozen" not in opts["flags"]:
            self.error(where, line, "cargo build without --locked: the image could build other "
                       "dependency versions than Cargo.lock pins")
        if "--release" not in opts["flags"] and opts["profile"] != "release":
            self.error(where, line, "cargo build without --release: images ship the release profile")
        selected = []
        for name in opts["package"]:
            if name in self.packages:
                selected.append(name)
            else:
                self.error(where, line, f"cargo build -p {name}: no such package in the workspace "
                           f"(packages: {', '.join(sorted(self.packages))})")
        scope = selected or ([] if opts["package"] else self.default_packages)
        for name in opts["bin"]:
            owners = [p for p in scope if any(
                "bin" in t["kind"] and t["name"] == name for t in self.packages[p]["targets"])]
            if not owners and scope:
                self.error(where, line, f"cargo build --bin {name}: no binary {name} in "
                           f"{', '.join(scope)}")
        for feature in opts["features"]:
            package, slash, name = feature.rpartition("/")
            if slash:
                if package not in self.packages or name not in self.packages[package]["features"]:
                    self.error(where, line, f"cargo build --features {feature}: package {package} "
                               f"has no feature {name}")
            elif scope and not any(feature in self.packages[p]["features"] for p in scope):
                self.error(where, line, f"cargo build --features {feature}: none of "
                           f"{', '.join(scope)} has a feature {feature}")
        return scope

    def check_workspace_copied(self, where, line, stage, workdir):
        """Cargo loads the whole workspace: every member must sit where Cargo.toml says."""
        copied = {}  # repository path -> path in the image
        for s in list(stage.chain())[::-1]:
            cwd = self.workdir(s.parent) if s.parent else "/"
            for ins in s.instructions:
                if ins.keyword == "WORKDIR":
                    cwd = posixpath.join(cwd, ins.args)
                if ins.keyword not in ("COPY", "ADD"):
                    continue
                flags, sources, dest = copy_parts(ins.args)
                if "from" in flags:
                    continue
                target = posixpath.join(cwd, dest)
                for src in sources:
                    path = posixpath.normpath(src.lstrip("/")) if src.strip("/") else "."
                    if path in self.ctx.dirs:
                        copied[path] = posixpath.normpath(target)
                    elif dest.endswith("/") or len(sources) > 1:
                        copied[path] = posixpath.join(target, posixpath.basename(path))
                    else:
                        copied[path] = posixpath.normpath(target)

        def image_path(repo_path):
            for src, dst in sorted(copied.items(), key=lambda kv: -len(kv[0])):
                if src == ".":
                    return posixpath.join(dst, repo_path)
                if repo_path == src or repo_path.startswith(src + "/"):
                    return posixpath.normpath(posixpath.join(dst, posixpath.relpath(repo_path, src)))
            return None

        manifest = image_path("Cargo.toml")
        if manifest is None:
            self.error(where, line, "cargo build in a stage that never copies Cargo.toml")
            return
        root = posixpath.dirname(manifest)
        if posixpath.normpath(workdir) != root:
            self.error(where, line, f"cargo build runs in {workdir}, but Cargo.toml was copied to {root}")
        for needed in ["Cargo.lock"] + [posixpath.join(d, "Cargo.toml") for d in self.member_dirs]:
            if image_path(needed) != posixpath.join(root, needed):
                self.error(where, line, f"cargo build: {needed} is not copied to {root}/{needed} "
                           "(cargo needs every workspace member and [patch] crate)")

    # --- final stages --------------------------------------------------------------------------

    @staticmethod
    def final_stages(stages):
        used = set()
        for s in stages:
            if s.parent:
                used.add(s.parent.index)
            for ins in s.instructions:
                flags, _ = split_flags(ins.args)
                refs = flags.get("from", []) + [
                    m for v in flags.get("mount", []) for m in re.findall(r"from=([^,]+)", v)]
                for ref in refs:
                    used |= {t.index for t in stages if t.name == ref.lower() or str(t.index) == ref}
        return [s for s in stages if s.index not in used]

    def check_final(self, where, stage, versions):
        user, user_line = None, stage.line
        entry, entry_line = None, None
        dests = set()
        for s in list(stage.chain())[::-1]:
            workdir = self.workdir(s)
            for ins in s.instructions:
                if ins.keyword == "USER":
                    user, user_line = ins.args, ins.line
                elif ins.keyword == "ENTRYPOINT":
                    entry, entry_line = ins.args, ins.line
                elif ins.keyword in ("COPY", "ADD"):
                    _, sources, dest = copy_parts(ins.args)
                    target = posixpath.join(workdir, dest)
                    dests.add(posixpath.normpath(target))
                    dests |= {posixpath.join(target, posixpath.basename(src.rstrip("/"))) for src in sources}
                elif ins.keyword == "ARG" and s is stage and ins.args.startswith("VERSION="):
                    version = ins.args.partition("=")[2].strip('"')
                    if versions and version not in versions:
                        self.error(where, ins.line, f"ARG VERSION={version}, but the crates built "
                                   f"here are version {', '.join(sorted(versions))}")
        label = f"final stage {stage.label()}"
        if user is None:
            self.error(where, stage.line, f"{label} sets no USER: it would run as the base image's "
                       "user; set a numeric non-root one (USER 65532:65532)")
        else:
            uid, _, gid = user.partition(":")
            if not uid.isdigit() or (gid and not gid.isdigit()):
                self.error(where, user_line, f"{label}: USER {user} is not numeric (runAsNonRoot "
                           "cannot verify a name); use e.g. USER 65532:65532")
            elif int(uid) == 0:
                self.error(where, user_line, f"{label}: USER {user} is root")
        argv = exec_form(entry) if entry else None
        if entry is None:
            self.error(where, stage.line, f"{label} has no ENTRYPOINT")
        elif not argv:
            self.error(where, entry_line, f"{label}: ENTRYPOINT is not in exec (JSON) form")
        elif argv[0] not in dests:
            self.error(where, entry_line, f"{label}: ENTRYPOINT {argv[0]} is not copied into the image")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", default=".", help="build context (the repository root)")
    parser.add_argument("--metadata", help="`cargo metadata --no-deps --format-version 1` output")
    parser.add_argument("dockerfiles", nargs="+")
    args = parser.parse_args()
    if args.metadata:
        metadata = json.load(open(args.metadata, encoding="utf-8"))
    else:
        metadata = json.loads(subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            cwd=args.context, check=True, capture_output=True).stdout)
    checker = Checker(Context(os.path.abspath(args.context)), metadata)
    for path in args.dockerfiles:
        before = len(checker.errors)
        checker.check_file(path)
        if len(checker.errors) == before:
            print(f"ok: {path}")
    for e in checker.errors:
        print(e, file=sys.stderr)
    return 1 if checker.errors else 0


if __name__ == "__main__":
    sys.exit(main())
