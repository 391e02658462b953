"""The README's "Python API" example runs as written (so it cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text()
    start = text.index("\n## Python API")
    section = text[start:text.find("\n## ", start + 5)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README: no python block in the Python API section"
    return blocks[0]


def test_readme_python_api_example(tmp_path, monkeypatch):
    code = _example()
    assert 'iis.load("simpleclick_vit_test"' in code and 'iis.load("random_walker")' in code
    monkeypatch.chdir(tmp_path)
    env: dict = {}
    exec(compile(code, "README.md:Python API", "exec"), env)
    pred = env["pred"]
    assert pred.mask.shape == (240, 320) and pred.prob.dtype.name == "float32"
    assert len(pred.clicks) == 2 and (tmp_path / "mask.png").is_file()
    assert env["rle"]["size"] == [240, 320]
