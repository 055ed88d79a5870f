"""Carry a semantic change to a job definition onto the `.kit` file as it is in git.

Farm's `jobs/save` rewrites the whole file with `toml.dump`, so committing Farm's text would
turn a one-value change into a whole-file rewrite with every comment gone. These pure functions
edit the git text instead, touching only what changed.

How: the file is cut into segments, one per table header (with the comment lines directly
above the header, which belong to it). Untouched segments are copied byte for byte; a segment
that changes is parsed alone with tomlkit and edited key by key, so comments, key order and
spacing survive. Every result is re-read with `tomllib` and with `toml` (the parser Farm uses);
if an in-place edit does not read back as intended, the definition's tables are rewritten
cleanly instead, and if even that fails a ValueError is raised rather than returning bad TOML.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import toml
import tomlkit
from tomlkit.container import OutOfOrderTableProxy
from tomlkit.items import Array, InlineTable, Item, String, Table

from gitsync.farm import DEFINITION_DEFAULTS, JOB_DEFINITION_COERCIONS, STORE_ONLY_FIELDS

Path = tuple[str, ...]

#: Field order for definitions gitsync writes from scratch; other fields follow.
_ORDER = ("name", "job_type", "command", "task_function", "args", "working_directory",
          "container", "success_return_codes", "log_to_stdout", "headless", "active",
          "env", "allowed_args", "capacity_requirements")
_INLINE_WIDTH = 60  # a flat table up to this many characters is written inline
_LINE_WIDTH = 80  # a longer array gets one element per line
_MISSING = object()


def definitions_equal(
    a: Mapping[str, Any], b: Mapping[str, Any], *, key: str | None = None
) -> bool:
    """True when Farm would treat both definitions the same.

    Store-only fields, None values and fields equal to Farm's defaults are ignored (so are the
    falsy values Farm replaces with a default, such as the `task_function = ""` it writes); with
    `key`, a `name` equal to the table key counts as absent (the store registers the key anyway).
    """
    return _equal(_normalize(a, key), _normalize(b, key))


def update_definition(git_text: str, key: str, new: Mapping[str, Any]) -> str:
    """Return `git_text` with `[job.<key>]` changed to match `new`, touching only what changed.

    `git_text` itself (the same object) when nothing changes; a new table at the end when the
    file has no such job. Raises ValueError when `git_text` is not TOML, or the job is written as
    dotted keys under `[job]` (no table to edit) and no correct text can be produced.
    """
    git_def = tomllib.loads(git_text).get("job", {}).get(key)
    if git_def is None:
        target = _fresh(key, new)
        table = _header(key) + _render_table(("job", key), target)
        candidates: list[str | None] = [_insert_after(git_text, table)]
    else:
        target = _target(git_def, _canonical(new), key)
        if _equal(git_def, target):
            return git_text
        # in place if that reads back right, else the definition's tables rewritten cleanly
        candidates = [_carry(git_text, key, git_def, target), _rewrite(git_text, key, target)]
    for text in candidates:
        if text is not None and _reads_back(text := _same_eol(git_text, text), git_text, key,
                                            target):
            return text
    raise ValueError(f"cannot write job {key!r} so that both tomllib and toml read it back")


def remove_definition(git_text: str, key: str) -> str | None:
    """Return `git_text` without `[job.<key>]`, or None when no job definition is left."""
    segments = _split(git_text)
    text = "".join(s.text for s in segments if s.path[:2] != ("job", key))
    if segments[-1].path[:2] == ("job", key):
        text = _trim_end(text)  # no blank lines left at the end of the file
    jobs = tomllib.loads(text).get("job", {})
    if key in jobs:
        raise ValueError(f"job {key!r} is not written as a [job.{key}] table; cannot remove it")
    return text if jobs else None


def new_definition_file(key: str, new: Mapping[str, Any]) -> str:
    """A readable `.kit` file for a definition git has not seen, without Farm's defaults."""
    return _header(key) + _render_table(("job", key), _fresh(key, new))


# --- what the git table should hold ---------------------------------------------------------


def _target(git: dict[str, Any], new: dict[str, Any], key: str) -> dict[str, Any]:
    """The git table after the change: git's own values wherever Farm means the same thing."""
    target = dict(git)
    for field in [*git, *(f for f in new if f not in git)]:
        if field in STORE_ONLY_FIELDS:
            continue  # meaningless in git; leave whatever git has
        if field == "name":
            name = new.get("name")
            if name is not None and name != key and name != git.get("name", key):
                target["name"] = name
        elif field not in new:  # absent (or None): Farm's default applies
            if field in git and not _is_default(field, git[field]):
                del target[field]
        elif field not in git:
            if not _is_default(field, new[field]):
                target[field] = new[field]
        elif not _equal(git[field], new[field]) and not (
            _is_default(field, git[field]) and _is_default(field, new[field])
        ):
            target[field] = new[field]  # a default git spells out stays spelled out
    return target


def _fresh(key: str, new: Mapping[str, Any]) -> dict[str, Any]:
    values = _normalize(new, None)
    values.setdefault("name", key)  # Farm's save and upload identify a definition by name
    rank = {f: i for i, f in enumerate(_ORDER)}
    return dict(sorted(values.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def _normalize(definition: Mapping[str, Any], key: str | None) -> dict[str, Any]:
    """Only what tells this definition apart from Farm's defaults."""
    return {
        field: value for field, value in _canonical(definition).items()
        if field not in STORE_ONLY_FIELDS and not (field == "name" and value == key)
        and not _is_default(field, value)
    }


def _canonical(definition: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values without the "" Farm writes for an unset task_function or container."""
    return {
        field: value for field, value in _plain(definition).items()
        if value or field not in JOB_DEFINITION_COERCIONS or DEFINITION_DEFAULTS.get(field) is not None
    }


def _is_default(field: str, value: Any) -> bool:
    """Farm uses its default for this value: equal to it, or falsy where Farm coerces (`x or d`)."""
    if field in JOB_DEFINITION_COERCIONS and not value:
        return True
    return field in DEFINITION_DEFAULTS and _equal(value, DEFINITION_DEFAULTS[field])


def _plain(value: Any) -> Any:
    """tomlkit items, `toml`'s dict subclasses and tuples as plain dicts, lists and scalars."""
    if hasattr(value, "unwrap"):
        value = value.unwrap()
    if isinstance(value, Mapping):  # `toml.dump` drops None values, so Farm never keeps them
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _equal(a: Any, b: Any) -> bool:
    """Equality that, unlike ==, tells true from 1 and 1 from 1.0, as TOML does."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and a == b


# --- segments: one per table header ---------------------------------------------------------


@dataclass
class _Segment:
    path: Path  # () for the text before the first header
    aot: bool  # an [[array of tables]] header
    text: str


def _split(text: str) -> list[_Segment]:
    lines = _lines(text)
    kinds = _line_kinds(lines)
    starts = []
    for n, kind in enumerate(kinds):
        if kind == "header":
            start = n
            while start > 0 and kinds[start - 1] == "comment":
                start -= 1
            starts.append((start, n))
    segments = [_Segment((), False, "".join(lines[: starts[0][0] if starts else None]))]
    for i, (start, n) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else None
        segments.append(_Segment(*_header_path(lines[n]), "".join(lines[start:end])))
    return segments


def _line_kinds(lines: list[str]) -> list[str]:
    """'header', 'comment', 'blank' or 'value' per line; knows multi-line strings and arrays."""
    kinds, depth, quote = [], 0, ""
    for line in lines:
        stripped = line.strip()
        if not quote and depth == 0 and (not stripped or stripped[0] in "#["):
            kinds.append("blank" if not stripped else "comment" if stripped[0] == "#" else "header")
            continue
        kinds.append("value")
        i = 0
        while i < len(line):
            c = line[i]
            if quote:
                if c == "\\" and quote == '"""':
                    i += 2
                elif line.startswith(quote, i):
                    i += 3
                    while i < len(line) and line[i] == quote[0]:
                        i += 1
                    quote = ""
                else:
                    i += 1
            elif c == "#":
                break
            elif line.startswith(c * 3, i) and c in "\"'":
                quote, i = c * 3, i + 3
            elif c in "\"'":
                i += 1
                while i < len(line) and line[i] != c:
                    i += 2 if c == '"' and line[i] == "\\" else 1
                i += 1
            else:
                depth += (c in "[{") - (c in "]}")
                i += 1
    return kinds


def _header_path(line: str) -> tuple[Path, bool]:
    data: Any = tomllib.loads(line)
    path, aot = [], False
    while data:
        ((name, data),) = data.items()
        path.append(name)
        if isinstance(data, list):
            aot, data = True, data[0]
    return tuple(path), aot


def _lines(text: str) -> list[str]:
    return re.findall(r"[^\n]*\n|[^\n]+", text)  # not splitlines(): it splits at \x0c, \u2028...


def _blank_tail(text: str) -> int:
    """Where the run of blank lines at the end of `text` starts."""
    return re.search(r"(?:^[ \t\r]*\n)*\Z", text, re.M).start()  # type: ignore[union-attr]


def _trim_end(text: str) -> str:
    return text[: _blank_tail(text)]


def _insert_after(text: str, table: str) -> str:
    """`text`, a blank line and `table`, then the blank lines `text` ended with."""
    core = text[: _blank_tail(text)]
    if not core.strip():
        return table
    return core + ("" if core.endswith("\n") else "\n") + "\n" + table + text[len(core):]


def _same_eol(git_text: str, text: str) -> str:
    """Give lines we wrote the CRLF endings of a file that uses CRLF throughout."""
    if "\r\n" in git_text and "\n" not in git_text.replace("\r\n", ""):
        return re.sub(r"(?<!\r)\n", "\r\n", text)
    return text


# --- editing in place -----------------------------------------------------------------------


def _carry(git_text: str, key: str, git_def: dict[str, Any], target: dict[str, Any]) -> str | None:
    """Edit only the segments that change; None when that cannot be done."""
    segments = _split(git_text)
    root = ("job", key)
    mine = [i for i, s in enumerate(segments) if s.path[:2] == root]
    if not mine:
        return None  # written as dotted `job.<key>...` keys elsewhere

    def under(i: int, paths: list[Path]) -> bool:
        return any(segments[i].path[: len(p)] == p for p in paths)

    # An unchanged [[array of tables]] stays as it is; a changed one is dropped and its new
    # value written like any other array.
    aots = [segments[i].path for i in mine if segments[i].aot]
    arrays = [p for p in aots if _equal(_lookup(git_def, p[2:]), _lookup(target, p[2:]))]
    changed = [p for p in aots if p not in arrays]
    present = [i for i in mine if not under(i, changed)]
    edits: dict[int, str] = {}
    inserts: dict[int, list[str]] = {}

    def plan(path: Path, want: dict[str, Any]) -> None:
        """Make the segments at and under `path` hold `want`: edit them, queue new tables."""
        here = next((i for i in present if segments[i].path == path), None)
        doc = tomlkit.parse(segments[here].text) if here is not None else tomlkit.document()
        table = _dig(doc, path) if here is not None else {}
        keep: dict[str, Any] = {}  # for this segment's own table
        tables: dict[str, Any] = {}  # new sub-tables
        for name, value in want.items():
            sub = path + (name,)
            if name in table:
                keep[name] = value
            elif sub in arrays:
                continue
            elif isinstance(value, dict) and any(
                segments[i].path[: len(sub)] == sub for i in present
            ):
                plan(sub, value)
            elif isinstance(value, dict) and not _inlinable(value):
                tables[name] = value
            else:
                keep[name] = value
        last = max(i for i in mine if segments[i].path[: len(path)] == path)
        if here is None:
            if keep or tables or not want:  # an emptied table needs a header of its own
                inserts.setdefault(last, []).append(_render_table(path, keep | tables))
            return
        if _sync_table(table, keep):
            edits[here] = doc.as_string()
        for name, value in tables.items():
            inserts.setdefault(last, []).append(_render_table(path + (name,), value))

    try:
        plan(root, target)
    except Exception:  # noqa: BLE001 - tomlkit has edit bugs on rare layouts; caller rewrites
        return None
    text, dropped = "", False
    for i, segment in enumerate(segments):
        dropped = i in mine and (under(i, changed) or not under(i, arrays) and not isinstance(
            _lookup(target, segment.path[2:]), dict))  # the table went, or is no table now
        if not dropped:
            text += edits.get(i, segment.text)
        for table in inserts.get(i, []):
            text = _insert_after(text, table)
    return _trim_end(text) if dropped else text  # no blank lines left at the end of the file


def _sync_table(table: Any, want: dict[str, Any]) -> bool:
    """Edit a tomlkit table key by key so that it holds `want`; True if anything changed."""
    changed = False
    for name in [k for k in table if k not in want]:
        del table[name]
        changed = True
    for name, value in want.items():
        old = table.get(name, _MISSING)
        if old is not _MISSING and _equal(_plain(old), value):
            continue
        changed = True
        if isinstance(old, Table | OutOfOrderTableProxy) and isinstance(value, dict) and (
            set(old) & set(value)  # tomlkit fails to delete the last of a run of dotted keys
        ):
            _sync_table(old, value)  # dotted keys (`env.A = ...`)
        elif isinstance(old, Array) and isinstance(value, list) and "\n" in old.as_string():
            _sync_array(old, value)
        elif old is _MISSING:
            _add(table, name, _item(_render(value, top=True)))
        else:
            table[name] = _item(_render(value, old, top=True))
    return changed


def _add(table: Any, name: str, item: Item) -> None:
    """Add after the table's last key, not after the comments that end it (often a banner for
    what follows). tomlkit has no public way to insert at a position."""
    body = table.value.body if isinstance(table, Table) else []
    last = max((i for i, (k, _) in enumerate(body) if k is not None), default=len(body))
    if last < len(body) - 1:
        table.value._insert_at(last + 1, name, item)
    else:
        table[name] = item


def _sync_array(array: Array, want: list[Any]) -> None:
    """Change a multi-line array element by element, keeping the lines and comments of the rest."""
    have = [_plain(x) for x in array]
    like = array[0] if len(array) else None
    matcher = difflib.SequenceMatcher(a=[_hashable(x) for x in have],
                                      b=[_hashable(x) for x in want], autojunk=False)
    for tag, i1, i2, j1, j2 in reversed(matcher.get_opcodes()):
        if tag == "equal":
            continue
        both = min(i2 - i1, j2 - j1)
        for n in range(both):
            array[i1 + n] = _item(_render(want[j1 + n], array[i1 + n]))
        for n in reversed(range(i1 + both, i2)):
            del array[n]
        for n, j in enumerate(range(j1 + both, j2)):
            element = _item(_render(want[j], like))
            if i1 + both + n < len(array):
                array.insert(i1 + both + n, element)
            else:
                array.append(element)


def _rewrite(git_text: str, key: str, target: dict[str, Any]) -> str | None:
    """Fallback: all of the definition's tables replaced by a clean one where the first stood.

    Keeps the comment block above the definition; comments inside it are lost.
    """
    text, done = "", False
    for segment in _split(git_text):
        if segment.path[:2] != ("job", key):
            text += segment.text
        elif not done:
            lines = _lines(segment.text)
            text += "".join(lines[: _line_kinds(lines).index("header")])
            text += _render_table(("job", key), target) + segment.text[_blank_tail(segment.text):]
            done = True
    return _trim_end(text) if done else None


# --- checking -------------------------------------------------------------------------------


def _reads_back(text: str, git_text: str, key: str, target: dict[str, Any]) -> bool:
    """Both parsers read `[job.<key>]` as `target` and everything else as git had it."""
    try:
        after = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    before = tomllib.loads(git_text)
    got = after.get("job", {}).pop(key, None)
    before.get("job", {}).pop(key, None)
    for data in (before, after):
        if data.get("job") == {}:
            del data["job"]
    if got is None or not _equal(got, target) or not _equal(after, before):
        return False
    try:
        toml.loads(git_text)
    except Exception:  # noqa: BLE001 - Farm cannot read the git file either; nothing to keep
        return True
    try:
        return _equal(_plain(toml.loads(text)["job"][key]), got)
    except Exception:  # noqa: BLE001 - `toml` raises assorted exceptions on text it rejects
        return False


# --- rendering ------------------------------------------------------------------------------


def _header(key: str) -> str:
    return f"# Job definition {key}, added by gitsync from the Farm jobs service.\n"


def _render_table(path: Path, values: dict[str, Any]) -> str:
    """`[path]` with its values; dicts too long or nested to read inline become sub-tables."""
    lines = [f"[{'.'.join(_key(p) for p in path)}]"]
    subs = {k: v for k, v in values.items() if isinstance(v, dict) and not _inlinable(v)}
    lines += [f"{_key(k)} = {_render(v, top=True)}" for k, v in values.items() if k not in subs]
    return "\n".join(lines) + "\n" + "".join(
        "\n" + _render_table(path + (k,), v) for k, v in subs.items()
    )


def _inlinable(value: dict[str, Any]) -> bool:
    return not any(isinstance(v, dict) for v in value.values()) and len(
        _render(value)) <= _INLINE_WIDTH


def _render(value: Any, like: Any = None, top: bool = False) -> str:
    """TOML text for `value`, reusing `like`'s text where equal and its style otherwise.

    `like` is the git item being replaced (or a sibling to imitate). `top` allows a multi-line
    array, which `toml` does not accept inside inline tables.
    """
    if like is not None and _equal(_plain(like), value):
        return str(like.as_string())
    if isinstance(value, str):
        literal = like.type.is_literal() if isinstance(like, String) else "\\" in value
        # `toml` misreads a literal string that ends in a backslash inside an array
        legal = not re.search(r"['\x00-\x08\x0a-\x1f\x7f]|\\\Z", value)
        return tomlkit.string(value, literal=literal and legal).as_string()
    if isinstance(value, dict):
        olds = like if isinstance(like, Mapping) else {}
        order = [k for k in olds if k in value] + [k for k in value if k not in olds]
        parts = [f"{_key(k)} = {_render(value[k], olds.get(k))}" for k in order]
        text = like.as_string() if isinstance(like, InlineTable) and len(like) else "{ "
        pad = " " if text.startswith("{ ") else ""
        return "{" + pad + ", ".join(parts) + pad + "}" if parts else "{}"
    if isinstance(value, list):
        elems = list(like) if isinstance(like, Array) else []
        sample = elems[0] if elems else None
        items = [_render(v, elems[i] if i < len(elems) else sample) for i, v in enumerate(value)]
        text = like.as_string() if isinstance(like, Array) else ""
        if top and not text and len(", ".join(items)) > _LINE_WIDTH and len(items) > 1:
            return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
        comma = "," if re.search(r",\s*\]\Z", text) and items else ""
        left, right = (" " if text.startswith("[ ") else ""), (" " if text.endswith(" ]") else "")
        return "[" + left + ", ".join(items) + comma + right + "]"
    return str(tomlkit.item(value).as_string())


def _item(text: str) -> Item:
    return tomlkit.parse(f"v = {text}\n")["v"]  # type: ignore[no-any-return]


def _key(name: str) -> str:
    return str(tomlkit.key(name).as_string())


def _dig(doc: Any, path: Path) -> Any:
    for name in path:
        doc = doc[name]
    return doc


def _lookup(data: Any, path: Path) -> Any:
    for name in path:
        if not isinstance(data, dict) or name not in data:
            return _MISSING
        data = data[name]
    return data


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)
