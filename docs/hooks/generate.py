"""The pages the docs build writes itself, so that they follow the code and the results:

- one page per method (`methods/<name>.md`), from the method module's docstring, its settings
  class and its `conf/strategy/<name>.yaml`, listed in the nav under the methods index, whose
  `<!-- methods:table -->` becomes the table of every method;
- the results: each folder `docs/results/<setup>/` (one run folder per method) drawn as a
  table and a plot by the project's own report code (flayer.results.report), in place of
  a `<!-- results:<setup> -->` marker of results.md (a folder without a marker goes at the
  end of that page).

Everything is made in memory (the plots in a temporary folder) and handed to MkDocs as
generated files: the build writes nothing into the tracked tree. A method is found the way
Hydra finds it (flayer.config.store.method_settings), so a new method gets its page without
any edit here.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import logging
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from docstrings import inline, to_markdown  # noqa: E402

log = logging.getLogger("mkdocs.hooks.generate")

METHODS_INDEX = "methods/index.md"
METHODS_TABLE = "<!-- methods:table -->"
RESULTS_PAGE = "results.md"
RESULTS_MARKER = re.compile(r"<!-- results:(?P<setup>[\w.-]+) -->")
YAML_KEY = re.compile(r"^(?P<key>\w+):\s*(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")
YAML_MORE = re.compile(r"^\s+#\s?(?P<comment>.*)$")


@dataclass(frozen=True)
class Setting:
    name: str
    type: str
    default: str  # as conf/strategy/<name>.yaml writes it
    meaning: str  # the yaml's comment


@dataclass(frozen=True)
class MethodDoc:
    name: str
    title: str  # "FedALA"
    cited: str  # "FedALA (Zhang et al., AAAI 2023)"
    summary: str  # what the yaml's header says after the citation
    module: str  # the method module: baselines.fedala, flayer.algorithm
    settings_module: str
    settings: list[Setting]

    @property
    def one_line(self) -> str:
        first = re.split(r"(?<=\.)\s", self.summary, maxsplit=1)[0]
        return first[:1].upper() + first[1:]


def _source(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot find the module {module}")
    return Path(spec.origin)


def _relative(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def _yaml_header(lines: list[str]) -> str:
    """The yaml's opening comment as one line."""
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    return " ".join(header)


def _yaml_settings(lines: list[str]) -> dict[str, tuple[str, str]]:
    """key -> (value as written, comment) for the top-level keys of a strategy yaml; a comment
    continued on the lines below belongs to the key above."""
    found: dict[str, tuple[str, str]] = {}
    last = None
    for line in lines:
        key, more = YAML_KEY.match(line), YAML_MORE.match(line)
        if key and key["key"] != "defaults":
            last = key["key"]
            found[last] = (key["value"], key["comment"] or "")
        elif more and last is not None and line.lstrip().startswith("#"):
            value, comment = found[last]
            found[last] = (value, f"{comment} {more['comment']}".strip())
        elif line.strip() and not line.startswith((" ", "-", "#")):
            last = None
    return found


def _same(written: str, default: Any) -> bool:
    return yaml.safe_load(written) == default


def method_docs() -> list[MethodDoc]:
    """Every method Hydra offers as `strategy=<name>`, FLAYER first."""
    from flayer.config.store import method_settings

    docs = []
    for name, settings in method_settings().items():
        conf = ROOT / "conf" / "strategy" / f"{name}.yaml"
        lines = conf.read_text(encoding="utf-8").splitlines()
        header = _yaml_header(lines)
        cited, _, summary = header.partition(": ")
        written = _yaml_settings(lines)
        rows = []
        for field in dataclasses.fields(settings):
            if field.name == "name":
                continue
            value, comment = written.get(field.name, ("", ""))
            if field.name not in written:
                log.warning("%s: no `%s` (a setting of %s)", _relative(conf), field.name,
                            settings.__name__)
            elif not _same(value, field.default):
                log.warning("%s: %s is %s, but %s's default is %r", _relative(conf),
                            field.name, value, settings.__name__, field.default)
            rows.append(Setting(field.name, str(field.type).replace(" | ", " or "), value,
                                comment))
        module = re.sub(r"\.settings(?=\.|$)", "", settings.__module__, count=1)
        docs.append(MethodDoc(name=name, title=cited.split(" (")[0], cited=cited,
                              summary=summary, module=module,
                              settings_module=settings.__module__, settings=rows))
    return sorted(docs, key=lambda d: (d.name != "flayer", d.name))


def method_page(doc: MethodDoc) -> str:
    source = _source(doc.module)
    where = _relative(source.parent) + "/" if source.name == "__init__.py" else _relative(source)
    docstring = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""
    out = [f"# {doc.title}", "",
           f"`strategy={doc.name}`: {inline(doc.cited)}: {inline(doc.summary)}", "",
           "```bash", f"python run.py strategy={doc.name}", "```", "", "## Settings", ""]
    if doc.settings:
        out += ["| setting | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `strategy.{s.name}` | {s.type} | `{s.default}` | {cell(s.meaning)} |"
                for s in doc.settings]
        example = doc.settings[0]
        out += ["", f"Each is set on the command line, e.g. `python run.py strategy={doc.name} "
                f"strategy.{example.name}={example.default}`."]
    else:
        out.append("None of its own: the run-wide settings apply.")
    out += ["", "## How it works", "", to_markdown(docstring), "## Where it lives", "",
            f"- `{where}`: the method (client side, server side, registration)",
            f"- `{_relative(_source(doc.settings_module))}`: its settings and their checks",
            f"- `conf/strategy/{doc.name}.yaml`: the defaults `strategy={doc.name}` composes",
            ""]
    return "\n".join(out)


def cell(text: str) -> str:
    """Prose for a table cell: escaped, its pipes too."""
    return inline(text).replace("|", "\\|")


def methods_table(docs: list[MethodDoc]) -> str:
    rows = ["| `strategy=` | method | in one line |", "|---|---|---|"]
    rows += [f"| [`{d.name}`]({d.name}.md) | {cell(d.cited)} | {cell(d.one_line)} |"
             for d in docs]
    return "\n".join(rows)


@dataclass(frozen=True)
class ResultSet:
    setup: str
    markdown: str
    plot: bytes


def result_sets() -> list[ResultSet]:
    """Each docs/results/<setup>/ as the report draws it: the comparison table and plot."""
    from flayer.results.report import compare
    sets = []
    for folder in sorted(p for p in (ROOT / "docs" / "results").iterdir() if p.is_dir()):
        try:
            c = compare([folder])
        except FileNotFoundError:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            c.plot(Path(tmp) / "comparison.png")
            plot = (Path(tmp) / "comparison.png").read_bytes()
        table = c.compared
        text = "\n".join([
            f"`docs/results/{folder.name}/`, {len(c.run_paths)} run(s); "
            f"`python -m flayer.results.report docs/results/{folder.name} --out DIR` prints the "
            "same.",
            "", table, "", c.note, "",
            f"![accuracy per round, {folder.name}](results/{folder.name}.png)", ""])
        sets.append(ResultSet(folder.name, text, plot))
    return sets


# ---- MkDocs events -------------------------------------------------------------------------

_methods: list[MethodDoc] = []
_results: dict[str, ResultSet] = {}


def _methods_section(nav: Any) -> list[Any] | None:
    """The nav list that holds the methods index."""
    if isinstance(nav, list):
        if METHODS_INDEX in nav:
            return nav
        for item in nav:
            found = _methods_section(item)
            if found is not None:
                return found
    elif isinstance(nav, dict):
        for value in nav.values():
            found = _methods_section(value)
            if found is not None:
                return found
    return None


def on_config(config: Any) -> Any:
    _methods[:] = method_docs()
    section = _methods_section(config["nav"])
    if section is None:
        log.warning("the nav has no %s to list the methods under", METHODS_INDEX)
    else:
        section[:] = [item for item in section if not str(item).startswith("methods/")
                      or item == METHODS_INDEX]
        section += [f"methods/{d.name}.md" for d in _methods]
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for doc in _methods:
        files.append(File.generated(config, f"methods/{doc.name}.md", content=method_page(doc)))
    _results.clear()
    for result in result_sets():
        _results[result.setup] = result
        files.append(File.generated(config, f"results/{result.setup}.png",
                                    content=result.plot))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri == METHODS_INDEX:
        if METHODS_TABLE not in markdown:
            log.warning("%s has no %s", METHODS_INDEX, METHODS_TABLE)
        return markdown.replace(METHODS_TABLE, methods_table(_methods))
    if page.file.src_uri == RESULTS_PAGE:
        placed = set()

        def fill(match: re.Match[str]) -> str:
            setup = match["setup"]
            if setup not in _results:
                log.warning("%s names docs/results/%s, which holds no runs", RESULTS_PAGE,
                            setup)
                return ""
            placed.add(setup)
            return _results[setup].markdown

        markdown = RESULTS_MARKER.sub(fill, markdown)
        rest = [s for s in _results if s not in placed]
        if rest:
            markdown += "\n\n## More result sets\n\n" + "\n\n".join(
                f"### {s}\n\n{_results[s].markdown}" for s in rest)
    return markdown
