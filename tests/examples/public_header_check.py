#!/usr/bin/env python3
"""Public headers (every coproc/**/*.hpp outside detail/) carry no test hooks and open
with their own API, not with screens of detail code: at most MAX_PROLOGUE lines of
`namespace detail` may come before the header's first public declaration.

    public_header_check.py INCLUDE_DIR...
"""
import pathlib
import re
import sys

MAX_PROLOGUE = 20
HOOK = re.compile(r"for_testing|test hook", re.I)

problems = []
count = 0
for root in sys.argv[1:]:
    for path in sorted(pathlib.Path(root).rglob("*.hpp")):
        if "detail" in path.parts:
            continue
        count += 1
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            if HOOK.search(line):
                problems.append(f"{path}:{n}: a test hook in a public header: {line.strip()}")
        detail_lines, depth, in_detail = 0, 0, False
        for line in text.splitlines():
            if re.match(r"^namespace (coproc::)?detail \{", line):
                in_detail = True
                continue
            if in_detail:
                if re.match(r"^\}  // namespace (coproc::)?detail", line):
                    in_detail = False
                else:
                    detail_lines += 1
                continue
            if re.match(r"^(class|struct|enum class|template <|using|inline|[A-Za-z_:<>]+ [a-z_]+\()", line):
                break
        if detail_lines > MAX_PROLOGUE:
            problems.append(f"{path}: opens with {detail_lines} lines of detail code "
                            f"(move them to a detail/ header)")
print(f"{count} public headers checked")
if problems:
    sys.exit("\n".join(problems))
