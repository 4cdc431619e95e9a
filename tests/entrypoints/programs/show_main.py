"""Prints what ``python show_main.py`` would see, then exits with argv[1]'s code."""

import os
import sys

print(f"name={__name__}", flush=True)
print(f"argv={sys.argv}", flush=True)
print(f"path0={sys.path[0]}", flush=True)
print(f"file={os.path.abspath(__file__)}", flush=True)
if len(sys.argv) > 1 and sys.argv[1] == "raise":
    raise ValueError("boom from the program")
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
