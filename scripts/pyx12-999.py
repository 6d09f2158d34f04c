#!/usr/bin/env python3
"""The test clearinghouse: validate an X12 file with pyx12 and write the 999
it generates. Usage: pyx12-999.py INPUT OUTPUT_999

Prints "valid" or "invalid" (exit 0 either way; 2 when pyx12 itself fails).
pyx12's logger prints segment values, so it is silenced: nothing of the
file's contents reaches the test's output. Run with the interpreter of the
venv scripts/install-test-deps.sh creates ($FERRY_TEST_CACHE/pyx12-venv).
"""
import io
import logging
import sys

logging.disable(logging.CRITICAL)

import pyx12.params  # noqa: E402
import pyx12.x12n_document  # noqa: E402


def main():
    src, dst = sys.argv[1], sys.argv[2]
    params = pyx12.params.params()
    fd_997 = io.StringIO()
    fd_html = io.StringIO()
    try:
        ok = pyx12.x12n_document.x12n_document(params, src, fd_997, fd_html, None)
    except Exception as e:  # a crash of the oracle is not a verdict
        print(f"pyx12 failed: {type(e).__name__}", file=sys.stderr)
        return 2
    with open(dst, "w", encoding="ascii") as f:
        f.write(fd_997.getvalue())
    print("valid" if ok else "invalid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
