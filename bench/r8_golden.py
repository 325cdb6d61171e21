"""Write tests/data/attribute_decisions_r7.json: the decisions of the pre-round-8 artifacts (issue 11 round 8).

Run under the code the digests must describe (the pre-round-8 commit 32b663f), e.g.
``git archive 32b663f src | tar -x -C /tmp/base && PYTHONPATH=/tmp/base/src:tests python bench/r8_golden.py``;
``tests/test_attribute_golden.py`` then checks that the current code gives the same bytes."""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from test_attribute_golden import ARTIFACTS, GOLDEN, decision_digests  # noqa: E402

if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({a: decision_digests(a) for a in ARTIFACTS}, indent=0) + "\n")
    print(f"wrote {GOLDEN}")
