#!/usr/bin/env python3
"""Checks that README.md's C++ example is a verbatim excerpt of examples/quick_tour.cpp
(which is compiled and run by the test suite), so the README never shows code that
does not build.

    readme_snippet_check.py README.md examples/quick_tour.cpp
"""
import re
import sys

readme, source = (open(p).read() for p in sys.argv[1:3])
blocks = re.findall(r"```cpp\n(.*?)```", readme, re.S)
if not blocks:
    sys.exit("README.md has no ```cpp block")
for block in blocks:
    if block not in source:
        sys.exit("README.md's ```cpp block is not an exact excerpt of " + sys.argv[2] + ":\n" + block)
print(f"{len(blocks)} README snippet(s) match {sys.argv[2]}")
