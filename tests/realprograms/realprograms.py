#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The real-programs suite: large C programs nobody here wrote, fetched from
# the npm registry at pinned versions, compiled to one bitcode module each
# with clang-14, run through wxa-lli (LLJIT + JITLink on a wxarena arena,
# default options but the backend) and compared byte for byte with the same
# bitcode compiled natively.
#
#   realprograms.py run PROGRAM BACKEND POLICY   one meson test
#   realprograms.py prepare PROGRAM              fetch and build only
#   realprograms.py bench PROGRAM...             docs/benchmarks.md's tables
#
# Tools and the cache directory come from the environment (tests/meson.build):
# WXA_LLI, WXA_SECCOMP_RUN (optional), CLANG, LLVM_LINK, NPM, WXA_RP_CACHE.
# Downloads, bitcode, native builds and wxa-lli's compiled objects are kept
# in the cache (build/realprograms), so that reruns only link and run; a
# lock file per program lets tests running side by side prepare it once.
# Exit status: 0 passed, 1 failed, 77 skipped (meson's code), with the
# reason on stdout.
import fcntl
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time

SKIP = 77

# Pinned: the npm package, its version and the sha256 of its tarball.
PACKAGES = {
    "sqlite": ("sqlite3", "6.0.1",
               "ab8d044a93e05bd031d7ea75547c7fa60387cdc259d27f93c0e3e2832c4b1df9"),
    "lz4": ("lz4", "0.6.5",
            "fdb90b41c5a56d27f74b2c42a9861b0893f225ddb637f79e1b67a4e4b5f5f93f"),
}
HERE = os.path.dirname(os.path.abspath(__file__))
CFLAGS = ["-O2", "-g0"]


class Skip(Exception):
    pass


def env(name, required=True):
    value = os.environ.get(name, "")
    if required and not value:
        raise Skip(f"{name} is not set (tests/meson.build sets it)")
    return value


def check(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n"
                           + r.stderr.decode(errors="replace")[-3000:])
    return r


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(cache, program):
    """The package's tarball, from the cache or `npm pack`."""
    name, version, digest = PACKAGES[program]
    tgz = os.path.join(cache, f"{name}-{version}.tgz")
    if not os.path.exists(tgz):
        npm = env("NPM", required=False)
        if not npm:
            raise Skip("npm is not installed: the programs come from the npm "
                       "registry")
        try:
            r = subprocess.run([npm, "pack", f"{name}@{version}",
                                "--pack-destination", cache, "--loglevel=error"],
                               capture_output=True, timeout=180, cwd=cache)
        except subprocess.TimeoutExpired:
            raise Skip(f"the npm registry did not answer for {name}@{version} "
                       "within 180 s")
        if r.returncode != 0 or not os.path.exists(tgz):
            lines = r.stderr.decode(errors="replace").splitlines()
            why = next((l for l in lines if "request to" in l or "ENOTFOUND"
                        in l or "ECONNREFUSED" in l),
                       lines[0] if lines else f"npm exit status {r.returncode}")
            raise Skip(f"the npm registry cannot be reached for {name}@"
                       f"{version}: {why.strip()}")
    if sha256(tgz) != digest:
        os.remove(tgz)
        raise RuntimeError(f"{tgz}: sha256 differs from the pinned {digest}")
    return tgz


def sources(cache, program, tgz):
    """Unpacks the C sources: (directory, files, include directories)."""
    root = os.path.join(cache, program + "-src")
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    with tarfile.open(tgz) as t:
        t.extractall(root, filter="data")
    package = os.path.join(root, "package")
    if program == "sqlite":
        # The amalgamation and the shell, as SQLite's own tarball.
        inner = [f for f in os.listdir(os.path.join(package, "deps"))
                 if re.fullmatch(r"sqlite-autoconf-\d+\.tar\.gz", f)]
        if len(inner) != 1:
            raise RuntimeError(f"no SQLite amalgamation in {tgz}")
        with tarfile.open(os.path.join(package, "deps", inner[0])) as t:
            t.extractall(root, filter="data")
        src = os.path.join(root, inner[0][:-len(".tar.gz")])
        return [os.path.join(src, f) for f in ("sqlite3.c", "shell.c")], [
            "-DSQLITE_THREADSAFE=0", "-DSQLITE_OMIT_LOAD_EXTENSION"]
    lz4 = os.path.join(package, "deps", "lz4")
    files = [os.path.join(lz4, "lib", f)
             for f in ("lz4.c", "lz4hc.c", "lz4frame.c", "xxhash.c")]
    files += [os.path.join(lz4, "programs", f)
              for f in ("lz4cli.c", "lz4io.c", "bench.c", "datagen.c")]
    return files, ["-I" + os.path.join(lz4, "lib")]


def prepare(program):
    """Bitcode, native program and compiled object of `program`, built once
    per cache (under a lock). Returns (bitcode, native, object cache,
    directory of the workload's inputs)."""
    cache = env("WXA_RP_CACHE")
    os.makedirs(cache, exist_ok=True)
    done = os.path.join(cache, program + ".done")
    bitcode = os.path.join(cache, program + ".bc")
    native = os.path.join(cache, program + "-native")
    objects = os.path.join(cache, "objects")
    with open(os.path.join(cache, program + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(done):
            clang, link = env("CLANG", required=False), env("LLVM_LINK",
                                                            required=False)
            if not clang or not link:
                raise Skip("clang-14 and llvm-link-14 are needed to build the "
                           "programs' bitcode")
            tgz = fetch(cache, program)
            files, flags = sources(cache, program, tgz)
            parts = []
            for f in files:
                out = os.path.join(cache, program + "-src",
                                   os.path.basename(f) + ".bc")
                check([clang, "-c", "-emit-llvm", *CFLAGS, *flags, f, "-o",
                       out])
                parts.append(out)
            check([link, *parts, "-o", bitcode])
            check([clang, *CFLAGS, bitcode, "-o", native, "-lm"])
            # The JIT's compile, once: later runs link the cached object.
            os.makedirs(objects, exist_ok=True)
            work = os.path.join(cache, program + "-work")
            os.makedirs(work, exist_ok=True)
            make_inputs(program, work, native)
            check([env("WXA_LLI"), "--cache=" + objects, bitcode,
                   "-V" if program == "lz4" else "-version"],
                  stdin=subprocess.DEVNULL)
            with open(done, "w") as f:
                f.write(" ".join(PACKAGES[program][:2]) + "\n")
    return bitcode, native, objects, os.path.join(cache, program + "-work")


def make_inputs(program, work, native):
    """The workload's input files, made once (under prepare()'s lock)."""
    if program != "lz4":
        return
    # About 4 MiB of text from a fixed seed: words of a small vocabulary.
    r = random.Random(21)
    words = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz")
                     for _ in range(r.randint(2, 9))) for _ in range(3000)]
    lines, size = [], 0
    while size < 4 << 20:
        line = " ".join(r.choice(words) for _ in range(r.randint(3, 14))) + "\n"
        lines.append(line)
        size += len(line)
    text = os.path.join(work, "input.txt")
    with open(text, "w") as f:
        f.write("".join(lines))
    with open(text + ".lz4", "wb") as f:
        f.write(check([native, "-9", "-c", "-q", text]).stdout)


def workload(program, work):
    """The steps of a program's workload: (arguments, stdin file or None)."""
    if program == "sqlite":
        return [([":memory:"], os.path.join(HERE, "sqlite_workload.sql"))]
    text = os.path.join(work, "input.txt")
    packed = text + ".lz4"
    return [(["-9", "-c", "-q", text], None),
            (["-1", "-BD", "--content-size", "-c", "-q", text], None),
            (["-d", "-c", "-q", packed], None),
            (["-t", "-q", packed], None)]


def run_step(cmd, stdin):
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as f:
        return subprocess.run(cmd, stdin=f, capture_output=True, timeout=600)


def wrap(policy, cmd):
    if policy == "none":
        return cmd
    seccomp = env("WXA_SECCOMP_RUN", required=False)
    if not seccomp:
        raise Skip(f"the {policy} policy needs wxa-seccomp-run (libseccomp)")
    return [seccomp, "--policy", policy, "--", *cmd]


def run(program, backend, policy):
    bitcode, native, objects, work = prepare(program)
    lli = [env("WXA_LLI"), "--backend=" + backend, "--cache=" + objects,
           bitcode]
    for args, stdin in workload(program, work):
        expect = run_step([native, *args], stdin)
        got = run_step(wrap(policy, [*lli, *args]), stdin)
        err = got.stderr.decode(errors="replace")
        m = re.search(r"wxa-lli: cannot create the arena: (.*)", err)
        if m and got.returncode == 2:
            raise Skip(f"backend {backend} under policy {policy}: "
                       f"{m.group(1)}")
        shown = " ".join(args)
        if got.returncode != expect.returncode:
            print(f"FAIL {program} {shown}: exit status {got.returncode}, "
                  f"native {expect.returncode}\n{err[-3000:]}")
            return 1
        if got.stdout != expect.stdout:
            at = next((i for i, (a, b) in enumerate(zip(got.stdout,
                                                        expect.stdout))
                       if a != b), min(len(got.stdout), len(expect.stdout)))
            print(f"FAIL {program} {shown}: output differs from the native "
                  f"build at byte {at} ({len(got.stdout)} bytes, native "
                  f"{len(expect.stdout)})\n{err[-3000:]}")
            return 1
        print(f"ok {program} {shown}: {len(got.stdout)} bytes identical, "
              f"exit status {got.returncode}")
    return 0


def bench(program, repeats=3):
    """docs/benchmarks.md's table: for LLVM's own JITLink memory manager and
    each wxarena backend, the time to materialize main (compile and link,
    then link only from the object cache) and to run the first workload
    step, wall and CPU, peak RSS and the process's VMAs at the end, as
    wxa-lli --time reports them: medians of `repeats` runs, the memory
    managers taking turns."""
    bitcode, native, objects, work = prepare(program)
    args, stdin = workload(program, work)[0]
    expect = run_step([native, *args], stdin)
    print(f"\n{program}: {' '.join(args)}" + (f" < {os.path.basename(stdin)}"
                                              if stdin else ""))
    print("| memory | materialize | run | total | total CPU | peak RSS "
          "| VMAs | output |")
    print("|---|--:|--:|--:|--:|--:|--:|---|")
    pattern = re.compile(r"materialize ([\d.]+) ms \(cpu ([\d.]+) ms\), run "
                         r"([\d.]+) ms \(cpu ([\d.]+) ms\), peak RSS (\d+) "
                         r"KiB, (\d+) VMAs")
    backends = ("llvm", "protect", "dual_map", "kernel_write")
    for cached in (False, True):
        rows = {b: [] for b in backends}
        for _ in range(repeats):
            for backend in backends:
                cmd = [env("WXA_LLI"), "--backend=" + backend, "--time"]
                if cached:
                    cmd.append("--cache=" + objects)
                got = run_step([*cmd, bitcode, *args], stdin)
                m = pattern.search(got.stderr.decode())
                if not m:
                    print(f"| {backend} | failed: "
                          f"{got.stderr.decode()[-200:]!r} |")
                    continue
                rows[backend].append((float(m[1]), float(m[3]),
                                      float(m[2]) + float(m[4]), int(m[5]),
                                      int(m[6]), got.stdout == expect.stdout))
        for backend in backends:
            r = rows[backend]
            if not r:
                continue
            median = lambda i: sorted(x[i] for x in r)[len(r) // 2]
            mat, run_ms, cpu = median(0), median(1), median(2)
            total = sorted(x[0] + x[1] for x in r)[len(r) // 2]
            name = ("LLVM InProcessMemoryManager" if backend == "llvm"
                    else f"wxarena {backend}")
            how = "link only" if cached else "compile + link"
            same = all(x[5] for x in r)
            print(f"| {name} ({how}) | {mat:.0f} ms | {run_ms:.0f} ms | "
                  f"{total:.0f} ms | {cpu:.0f} ms | {r[-1][3] / 1024:.1f} MiB "
                  f"| {r[-1][4]} | {'identical' if same else 'DIFFERS'} |")
    return 0


def main(argv):
    try:
        if len(argv) == 5 and argv[1] == "run" and argv[2] in PACKAGES:
            return run(argv[2], argv[3], argv[4])
        if len(argv) == 3 and argv[1] == "prepare" and argv[2] in PACKAGES:
            prepare(argv[2])
            return 0
        if (len(argv) >= 3 and argv[1] == "bench"
                and all(p in PACKAGES for p in argv[2:])):
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}, Linux "
                  f"{os.uname().release}, {os.cpu_count()} CPUs, load "
                  f"average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            for program in argv[2:]:
                bench(program)
            return 0
    except Skip as why:
        print(f"SKIP: {why}")
        return SKIP
    print(__doc__ if __doc__ else "usage: see the top of this file")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
