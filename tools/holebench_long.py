"""holebench at holes in functions of 21 to 60 lines (docs/model.md, "Holes in longer functions").

    .venv/bin/python tools/holebench_long.py [HOLEBENCH ARGUMENTS...]

holebench (../shared/bench/holebench.py, or the file HOLEBENCH names) cuts its holes only in functions
of at most 20 lines, the dataset's protocol.  This runs it unchanged, with every argument passed on,
except that its extraction takes functions of up to 60 lines and keeps the holes of those longer than
20: the same examples, the same client, the same judging, at the holes the shipped dataset leaves out.
"""
import os
import sys
from pathlib import Path

SHORT, LONG = 20, 60
HOLEBENCH = Path(os.environ.get("HOLEBENCH", Path(__file__).resolve().parents[2] / "shared/bench/holebench.py"))


def function_lines(ex, lang, parser) -> int:
    """Lines of the function around the example's hole (0 outside any function)."""
    n = parser.parse(ex.source).root_node.descendant_for_byte_range(ex.start, ex.end)
    while n is not None and n.type not in lang.function_types:
        n = n.parent
    return n.end_point[0] - n.start_point[0] + 1 if n is not None else 0


def main() -> int:
    if not HOLEBENCH.is_file():
        sys.exit(f"holebench not found at {HOLEBENCH}: set HOLEBENCH to the path of holebench.py")
    sys.path.insert(0, str(HOLEBENCH.parent))
    import holebench
    extract = holebench.extract

    def longer(path, lang, parser, max_lines=SHORT):
        return [e for e in extract(path, lang, parser, max_lines=LONG) if function_lines(e, lang, parser) > SHORT]

    holebench.extract = longer
    return holebench.main()


if __name__ == "__main__":
    sys.exit(main())
