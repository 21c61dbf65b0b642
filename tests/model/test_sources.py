from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from torchpredict.errors import ModelLoadError
from torchpredict.model.sources import load_source

# Every statement that must not run touches a marker file named after it; everything kept is checked by value.
EVERY_KIND = '''
"""A training script with one of each kind of top-level statement."""
from __future__ import annotations

import os
import pathlib
import torch
from torch import nn
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

try:
    import yaml_that_is_not_installed_xyz as yaml
except ImportError:
    yaml = None

try:
    import torch as maybe_torch
except ImportError:
    pass
else:
    pathlib.Path("ran-try-else").touch()

HIDDEN = 8
SIZES = (HIDDEN, HIDDEN // 2, -1)
TABLE = {"relu": nn.ReLU, **{"tanh": nn.Tanh}}
ACT = TABLE["relu"] if HIDDEN > 4 and True else None
RATE: float = 1 / 4
FIRST, *REST = SIZES

pathlib.Path("ran-expression").touch()
DEVICE = torch.device("cpu"); pathlib.Path("ran-semicolon").touch()
OUT = os.environ.get("OUT", "model.pt")
SQUARES = [i * i for i in range(3)]
SCALE = lambda x: x * 2  # noqa: E731
torch.backends.cudnn.benchmark = pathlib.Path("ran-attribute-assignment").touch()
for epoch in range(2):
    pathlib.Path("ran-for").touch()
with open("ran-with", "w"):
    pass
if True:
    pathlib.Path("ran-if").touch()
if __name__ == "__main__":
    pathlib.Path("ran-main").touch()
while not pathlib.Path("ran-while").exists():
    pathlib.Path("ran-while").touch()
assert pathlib.Path("ran-assert").touch() is None
from __main__ import Net as MainNet
import every_kind


@dataclass(frozen=True)
class Config:
    hidden: int = HIDDEN
    rate: float = RATE


class Color(Enum):
    RED = 1


class Pair(NamedTuple):
    left: int
    right: int


def register(cls):
    cls.registered = True
    return cls


@register
class Net(nn.Module):
    def __init__(self, config: Config = Config()):
        super().__init__()
        self.layer = nn.Linear(SIZES[0], config.hidden)
        self.act = ACT()

    def forward(self, x):
        return self.act(self.layer(x)) * RATE


def make_net():
    return Net()
'''


def write(folder: Path, text: str, name: str = "train.py") -> Path:
    (folder / name).write_text(textwrap.dedent(text))
    return folder / name


def test_only_imports_definitions_and_constants_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, EVERY_KIND, "every_kind.py")
    before = list(sys.path)

    source = load_source(path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["every_kind.py"], "a statement with side effects ran"
    assert sys.path == before
    namespace = vars(source.module)
    assert namespace["yaml"] is None
    assert (namespace["HIDDEN"], namespace["SIZES"], namespace["RATE"]) == (8, (8, 4, -1), 0.25)
    assert namespace["TABLE"] == {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh} and namespace["ACT"] is torch.nn.ReLU
    assert (namespace["FIRST"], namespace["REST"]) == (8, [4, -1])
    skipped = {"maybe_torch", "DEVICE", "OUT", "SQUARES", "SCALE", "epoch", "MainNet", "every_kind"}
    assert not skipped & set(namespace)
    assert skipped <= set(source.skipped)
    net = source.definition("make_net")()
    assert net.registered and net.layer.out_features == 8 and net.layer.in_features == 8
    assert source.definition("Config")().hidden == 8
    assert source.definition("Pair")(1, 2).right == 2 and source.definition("Color").RED.value == 1
    assert source.module.__doc__ == "A training script with one of each kind of top-level statement."


def test_the_skipped_statements_are_listed_with_their_lines(tmp_path: Path) -> None:
    source = load_source(write(tmp_path, EVERY_KIND, "every_kind.py"))
    assert source.why_missing("DEVICE") == (
        "sets 'DEVICE' only in code torchpredict does not run (line 33: DEVICE = torch.device(\"cpu\")): give it a "
        "literal value or set it inside the definition; only the script's imports, class and function definitions "
        "and constant assignments run"
    )
    assert source.why_missing("epoch").startswith("sets 'epoch' only in code torchpredict does not run (line 38: "
                                                  "for epoch in range(2):)")
    assert source.why_missing("Nope") == "defines no 'Nope'"
    assert source.definition("Nope") is None


@pytest.mark.parametrize(
    ("value", "runs"),
    [
        ("3", True), ("-1.5e3", True), ("'text'", True), ("None", True), ("(1, 'a', None)", True),
        ("[1, [2, 3]]", True), ("{1, 2}", True), ("{'a': 1, 'b': (2,)}", True), ("2 ** 10 - 1", True),
        ("not False", True), ("1 < 2 <= 3", True), ("A or B", True), ("A if B else 0", True),
        ("nn.ReLU", True), ("A", True), ("float", True), ("SEQ[1:]", True), ("nn.Linear.__name__", True),
        ("int('3')", False), ("nn.ReLU()", False), ("[i for i in SEQ]", False), ("lambda: 1", False),
        ("f'{A}'", False), ("UNDEFINED", False), ("LATER", False), ("(x := 3)", False), ("sys.argv[1:]", False),
        ("os.environ['HOME']", False), ("sys.argv", False), ("os.sep", True),
    ],
)
def test_which_constant_assignments_run(tmp_path: Path, value: str, runs: bool) -> None:
    script = f"import os\nimport sys\nfrom torch import nn\nA = 1\nB = 2\nSEQ = (1, 2)\nVALUE = {value}\nLATER = 3\n"
    source = load_source(write(tmp_path, script))
    assert ("VALUE" in vars(source.module)) is runs
    if runs:
        assert vars(source.module)["VALUE"] == eval(value, {"nn": torch.nn, "os": os, "A": 1, "B": 2, "SEQ": (1, 2)})


def test_a_constant_reassigned_by_skipped_code_is_no_longer_a_constant(tmp_path: Path) -> None:
    script = ("import os\nWIDTH = 4\nWIDTH = int(os.environ['WIDTH'])\nDOUBLE = WIDTH * 2\n"
              "round = getattr(os, 'name')\nR = round\n")
    source = load_source(write(tmp_path, script))
    assert not {"WIDTH", "DOUBLE", "R"} & set(vars(source.module))
    assert source.why_missing("WIDTH").startswith(
        "sets 'WIDTH' only in code torchpredict does not run (line 3: WIDTH = int(os.environ['WIDTH'])):"
    )
    with pytest.raises(ModelLoadError, match=re.escape("line 10: class Net uses 'WIDTH', which is set by code "
                                                       "torchpredict does not run (line 3: WIDTH = int(")):
        load_source(write(tmp_path, script + "\n\nclass Net:\n    width = WIDTH\n"))


@pytest.mark.parametrize(
    "guard",
    [
        "try:\n    import os\nexcept ImportError:\n    os = None\nfinally:\n    pass\n",
        "try:\n    import os\nexcept ImportError:\n    print('no os')\n",
        "try:\n    import os\n    os.makedirs('x')\nexcept ImportError:\n    pass\n",
        "try:\n    import os\nexcept make_error():\n    pass\n",
    ],
)
def test_a_try_block_runs_only_when_it_just_imports(tmp_path: Path, guard: str) -> None:
    source = load_source(write(tmp_path, guard))
    assert "os" not in vars(source.module) and "os" in source.skipped


def test_a_definition_needing_a_skipped_name_names_it_and_the_code_that_sets_it(tmp_path: Path) -> None:
    script = """
        import os
        from torch import nn

        HIDDEN = int(os.environ["HIDDEN"])


        class Net(nn.Module):
            '''The model.'''

            width = HIDDEN
    """
    path = write(tmp_path, script)
    with pytest.raises(ModelLoadError) as caught:
        load_source(path)
    assert str(caught.value) == (
        f"source '{path}' line 11: class Net uses 'HIDDEN', which is set by code torchpredict does not run "
        "(line 5: HIDDEN = int(os.environ[\"HIDDEN\"])); give it a literal value or set it inside the definition; "
        "only the script's imports, class and function definitions and constant assignments run"
    )
    assert not [m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == str(path.resolve())]


def test_a_decorator_or_default_needing_a_skipped_name_is_reported(tmp_path: Path) -> None:
    script = "import os\nPREFIX = os.getcwd()\n\n\ndef make(prefix=PREFIX):\n    return prefix\n"
    with pytest.raises(ModelLoadError, match=re.escape("line 5: function make uses 'PREFIX', which is set by code "
                                                       "torchpredict does not run (line 2: PREFIX = os.getcwd())")):
        load_source(write(tmp_path, script))


def test_a_class_whose_methods_read_a_skipped_name_is_refused_when_used(tmp_path: Path) -> None:
    script = """
        import torch
        from torch import nn

        device = torch.device("cpu")


        class Block(nn.Module):
            def forward(self, x):
                return x.to(device)


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.block = Block()

            def forward(self, device_or_x):
                return self.block(device_or_x)


        def helper(device):
            return device
    """
    source = load_source(write(tmp_path, script))
    assert source.definition("helper")("cpu") == "cpu"  # its `device` is a parameter, not the global
    with pytest.raises(ModelLoadError) as caught:
        source.definition("Net")
    assert str(caught.value) == (
        f"source '{tmp_path / 'train.py'}' line 8: class Block uses 'device', which is set by code torchpredict "
        "does not run (line 5: device = torch.device(\"cpu\")); give it a literal value or set it inside the "
        "definition; only the script's imports, class and function definitions and constant assignments run"
    )


def test_a_definition_that_skipped_code_replaces_is_refused(tmp_path: Path) -> None:
    script = "import functools\n\n\ndef make_net(width=2):\n    return width\n\n\n" \
             "make_net = functools.partial(make_net, width=64)\n"
    source = load_source(write(tmp_path, script))
    with pytest.raises(ModelLoadError) as caught:
        source.definition("make_net")
    assert str(caught.value) == (
        f"source '{tmp_path / 'train.py'}' line 4: function make_net is set again by code torchpredict does not run "
        "(line 8: make_net = functools.partial(make_net, width=64)), so the script's 'make_net' is not this one: "
        "copy the definitions the model needs, without that code, into a file and pass that instead"
    )


def test_a_failing_definition_is_reported_with_its_line(tmp_path: Path) -> None:
    script = "import torch\n\n\nclass Net(torch.nn.Module):\n    size = 1 / 0\n"
    with pytest.raises(ModelLoadError, match=re.escape("train.py' line 5: class Net failed: ZeroDivisionError: "
                                                       "division by zero")):
        load_source(write(tmp_path, script))
    with pytest.raises(ModelLoadError, match=re.escape("train.py' line 2: import no_such_module_xyz failed: "
                                                       "ModuleNotFoundError: No module named 'no_such_module_xyz'")):
        load_source(write(tmp_path, "import os\nimport no_such_module_xyz\n"))


def test_the_scripts_folder_is_searched_for_its_imports_only_while_it_loads(tmp_path: Path) -> None:
    write(tmp_path, "WIDTH = 3\n", "tp_sibling_consts.py")
    before = list(sys.path)
    try:
        source = load_source(write(tmp_path, "from tp_sibling_consts import WIDTH\n"))
    finally:
        sys.modules.pop("tp_sibling_consts", None)
    assert vars(source.module)["WIDTH"] == 3
    assert sys.path == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("def broken(:\n", r"source '.*train.py' line 1 is not valid Python: "),
        ("nonlocal x\n", r"source '.*train.py' line 1 is not valid Python: nonlocal declaration not allowed"),
    ],
)
def test_a_script_that_is_not_python_is_reported(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_source(write(tmp_path, text))


def test_a_missing_or_unreadable_script_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"source '.*missing.py' does not exist"):
        load_source(tmp_path / "missing.py")
    (tmp_path / "latin.py").write_bytes(b"NAME = '\xe9'\n")
    with pytest.raises(ModelLoadError, match=r"source '.*latin.py' cannot be read as a Python file: invalid or "
                       "missing encoding declaration"):
        load_source(tmp_path / "latin.py")
    (tmp_path / "declared.py").write_bytes(b"# -*- coding: latin-1 -*-\nNAME = '\xe9'\n")
    assert vars(load_source(tmp_path / "declared.py").module)["NAME"] == "\xe9"
