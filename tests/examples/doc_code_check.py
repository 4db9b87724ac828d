#!/usr/bin/env python3
"""Compiles every ```cpp block of README.md and docs/*.md (-fsyntax-only), each as its own
translation unit after a common prelude (coproc's headers, Asio, the standard headers the
docs lean on). A block that is an excerpt of a larger program gets what it leans on from an
HTML comment right above it, which the rendered page does not show:

    <!-- code-check prelude: int fib(int n); -->

    doc_code_check.py CXX OUTDIR FLAG... -- FILE.md...
Exits non-zero naming every block that does not compile (file and line).
"""
import os
import re
import subprocess
import sys

PRELUDE = """\
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <coproc/coproc.hpp>
#include <coproc/mpi/mpi_pool.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <unistd.h>
#include <vector>
using namespace std::chrono_literals;
"""

BLOCK = re.compile(r"(?:<!-- code-check prelude:(?P<pre>.*?)-->\s*\n)?```cpp\n(?P<code>.*?)```", re.S)


def main():
    sep = sys.argv.index("--")
    cxx, outdir, flags = sys.argv[1], sys.argv[2], sys.argv[3:sep]
    docs = sys.argv[sep + 1:]
    os.makedirs(outdir, exist_ok=True)
    failed, count = [], 0
    for doc in docs:
        text = open(doc).read()
        for m in BLOCK.finditer(text):
            count += 1
            line = text.count("\n", 0, m.start("code"))
            name = f"{os.path.basename(doc)}_{line}.cpp"
            path = os.path.join(outdir, name)
            with open(path, "w") as f:
                f.write(PRELUDE + (m.group("pre") or "") + "\n#line %d \"%s\"\n" % (line + 1, doc))
                f.write(m.group("code"))
            r = subprocess.run([cxx, "-std=c++20", "-fsyntax-only", *flags, path],
                               capture_output=True, text=True)
            status = "ok" if r.returncode == 0 else "FAILED"
            print(f"{doc}:{line + 1}: {status}")
            if r.returncode != 0:
                failed.append(f"{doc}:{line + 1}")
                print(r.stderr[:6000])
    print(f"{count} C++ block(s), {len(failed)} failed")
    if count == 0:
        sys.exit("no ```cpp block found")
    if failed:
        sys.exit("blocks that do not compile: " + ", ".join(failed))


main()
