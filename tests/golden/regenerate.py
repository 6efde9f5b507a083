"""Rewrite the expected halves of the golden cases: `python -m tests.golden.regenerate [NAME...]`.

Run it from the repository root after changing what a config means, then read the diff
(`git diff tests/golden`): every changed line is a change in what the gateway enforces.
A new case is a file `tests/golden/NAME.flmtest` holding only an flm.yaml.
"""

from __future__ import annotations

import sys

from flm_gateway.config import ConfigError
from tests.golden.cases import case_files, render_case


def main(names: list[str]) -> int:
    files = [path for path in case_files() if not names or path.stem in names]
    unknown = set(names) - {path.stem for path in files}
    if unknown:
        print(f"no such case: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    for path in files:
        try:
            new = render_case(path)
        except ConfigError as exc:
            print("\n".join(str(problem) for problem in exc.problems), file=sys.stderr)
            return 1
        if new != path.read_text(encoding="utf-8"):
            path.write_text(new, encoding="utf-8")
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
