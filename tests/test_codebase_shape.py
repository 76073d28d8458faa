"""The package stays in small modules whose docstrings open with a one-line summary."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mixpanel_assets"
MAX_MODULE_LINES = 500
# Prose lines a module docstring may hold; design notes beyond that go to docs/.
MAX_MODULE_DOC_LINES = 7
# Modules whose docstrings issue 19 has not trimmed yet (other work owns them): remove a name
# once its module keeps the rule.
NOT_YET_TRIMMED: set[str] = set()


def _modules() -> list[Path]:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50
    return modules


def _summary_lines(docstring: str) -> int:
    """The lines of the docstring's first paragraph."""
    lines = docstring.strip().splitlines()
    return next((index for index, line in enumerate(lines) if not line.strip()), len(lines))


def test_no_module_is_over_500_lines() -> None:
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in _modules()
    }
    assert {name: size for name, size in sizes.items() if size > MAX_MODULE_LINES} == {}


def test_every_module_opens_with_a_one_line_summary_and_no_essay() -> None:
    problems = {}
    for path in _modules():
        name = str(path.relative_to(PACKAGE))
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        if not docstring:
            problems[name] = "no docstring"
            continue
        if name in NOT_YET_TRIMMED:
            continue
        prose = [line for line in docstring.splitlines() if line.strip()]
        if _summary_lines(docstring) > 1:
            problems[name] = "the summary is not one line"
        elif len(prose) > MAX_MODULE_DOC_LINES:
            problems[name] = f"{len(prose)} lines of prose: move the design notes to docs/"
    assert problems == {}


def test_the_not_yet_trimmed_list_names_only_modules_that_still_need_it() -> None:
    still_long = set()
    for name in NOT_YET_TRIMMED:
        docstring = ast.get_docstring(ast.parse((PACKAGE / name).read_text())) or ""
        prose = [line for line in docstring.splitlines() if line.strip()]
        if _summary_lines(docstring) > 1 or len(prose) > MAX_MODULE_DOC_LINES:
            still_long.add(name)
    assert still_long == NOT_YET_TRIMMED


# Methods that only fill in a standard protocol (file objects, socketserver and
# BaseHTTPRequestHandler hooks, logging.Filter): the protocol says what they do.
PROTOCOL_METHODS = {
    "close",
    "closed",
    "do_GET",
    "filter",
    "finish",
    "flush",
    "handle_error",
    "log_message",
    "setup",
    "write",
}


def test_classes_and_public_functions_open_with_a_one_line_summary() -> None:
    problems = []
    for path in _modules():
        name = str(path.relative_to(PACKAGE))
        tree = ast.parse(path.read_text())
        members = [(node, False) for node in tree.body]
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                members += [(member, True) for member in node.body]
        for node, is_method in members:
            if not isinstance(node, ast.ClassDef | ast.FunctionDef) or node.name.startswith("_"):
                continue
            if is_method and node.name in PROTOCOL_METHODS:
                continue
            if name == "sandbox/__main__.py" and node.name == "main":
                continue  # the module docstring says what ``python -m`` does
            docstring = ast.get_docstring(node)
            if not docstring or _summary_lines(docstring) > 1:
                problems.append(f"{name}:{node.lineno} {node.name}")
    assert problems == []


def test_nested_public_functions_such_as_assets_open_with_a_one_line_summary() -> None:
    """An asset's or check's docstring is its description in Dagster: one line first there too."""
    problems = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        outer = {*tree.body}
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                outer.update(node.body)
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or node in outer or node.name.startswith("_"):
                continue
            docstring = ast.get_docstring(node)
            if docstring and _summary_lines(docstring) > 1:
                problems.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert problems == []
