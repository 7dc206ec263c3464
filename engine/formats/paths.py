"""Paths, compiled once: where a request puts a value, and where an answer holds one.

A request's target is a dot path (``contact.phone``; a whole number is a list index, and in
XML a last ``@name`` is an attribute). An answer's value is read by a dot path (JSON keys and
list indexes, ``*`` for every item; on an XML answer, child elements from the root), an XPath
of the subset below (it starts with ``/``), or a regex whose first group is the value.

XPath subset: ``/a/b`` from the document (``a`` is the root element), ``//b`` anywhere,
``*`` any element, predicates ``[n]`` (from 1), ``[last()]``, ``[@x]``, ``[@x='v']``,
``[c]``, ``[c='v']``, and a last step ``/@x`` (an attribute) or ``/text()``. Names match
whatever their namespace, so a SOAP answer reads like any other.
"""

from __future__ import annotations

import re
from typing import Any, Callable
from xml.etree import ElementTree

from .transforms import Problems

XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_STEP = re.compile(r"""(?P<name>\*|[A-Za-z_][A-Za-z0-9_.\-]*)(?P<preds>(?:\[[^\]]*\])*)\Z""")
_PREDICATE = re.compile(r"""\[(?:(?P<index>[1-9][0-9]*|last\(\))
                             |(?P<attr>@)?(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?:=(?P<q>['"])(?P<value>[^'"]*)(?P=q))?)\]""",
                        re.VERBOSE)

Segment = str | int
#: A compiled read: the answer's parsed form in, its values (in document order) out.
Reader = Callable[[Any], list[Any]]


# Request targets -------------------------------------------------------------------------


def target(path: str, nested: bool, xml: bool, where: str, problems: Problems) -> tuple[Segment, ...]:
    """A field's ``to``: the name itself for a form or query string, else its dot path's
    segments, each checked for the encoding (an XML element needs an XML name)."""
    if not nested:
        return (path,)
    segments: list[Segment] = []
    parts = path.split(".")
    for k, part in enumerate(parts):
        if not part:
            problems.append((where, f"{path!r} has an empty step: write steps like contact.phone"))
            return ()
        if part.isdigit() and part.isascii():
            if k == 0:
                problems.append((where, f"{path!r} starts with a list index: the body is an object"))
                return ()
            segments.append(int(part))
        elif xml and part.startswith("@"):
            if k != len(parts) - 1 or not XML_NAME.match(part[1:]):
                problems.append((where, f"{path!r}: an attribute (@name) is a last step with an XML name"))
                return ()
            segments.append(part)
        elif xml and not XML_NAME.match(part):
            problems.append((where, f"{path!r}: {part!r} is not an XML element name"))
            return ()
        else:
            segments.append(part)
    if xml and any(type(s) is int for s in segments):
        problems.append((where, f"{path!r}: an XML body has no list indexes (repeat an element with a list value)"))
        return ()
    return tuple(segments)


def check_targets(targets: list[tuple[str, tuple[Segment, ...]]], problems: Problems) -> None:
    """No two fields write the same place or one inside the other's value, and list indexes
    under one parent run 0, 1, 2..., so every body has one shape."""
    seen: dict[tuple[Segment, ...], str] = {}
    for where, path in targets:
        if not path:
            continue
        clash = next((w for p, w in seen.items() if p[:len(path)] == path or path[:len(p)] == p), None)
        if clash is None:
            seen[path] = where
        else:
            problems.append((where, f"writes where {clash} does (the same place, or one inside the other)"))
    indexes: dict[tuple[Segment, ...], set[int]] = {}
    for path in seen:
        for k, step in enumerate(path):
            if type(step) is int:
                indexes.setdefault(path[:k], set()).add(step)
    for parent, found in indexes.items():
        if found != set(range(len(found))):
            where = next(w for p, w in seen.items() if p[:len(parent)] == parent)
            problems.append((where, f"list indexes under {'.'.join(map(str, parent))} must run 0, 1, 2..."))


# Answer reads ------------------------------------------------------------------------------


def json_path(path: str) -> Callable[[Any], list[Any]]:
    """A dot path over a decoded JSON answer."""
    steps: list[Segment] = [int(p) if p.isdigit() and p.isascii() else p for p in path.split(".")]

    def read(document: Any) -> list[Any]:
        found = [document]
        for step in steps:
            following: list[Any] = []
            for node in found:
                if step == "*":
                    following += node if type(node) is list else list(node.values()) if type(node) is dict else []
                elif type(node) is dict:
                    value = node.get(str(step))
                    if value is not None:
                        following.append(value)
                elif type(node) is list and type(step) is int and step < len(node):
                    following.append(node[step])
            found = following
        return found
    return read


def _element_text(element: ElementTree.Element) -> str:
    return "".join(element.itertext()).strip()


def _xml_reader(element_path: str, absolute: bool, last: str | None) -> Callable[[Any], list[Any]]:
    """``element_path`` (ElementTree's syntax) from the document (``absolute``) or from the
    root, then the elements' texts or the attribute ``last`` names."""
    def read(root: ElementTree.Element) -> list[Any]:
        if absolute:
            document = ElementTree.Element("document")
            document.append(root)
            elements = document.findall(element_path)
        else:
            elements = root.findall(element_path)
        if last is None:
            return [_element_text(e) for e in elements]
        return [e.get(last) for e in elements if e.get(last) is not None]
    return read


def dot_path_as_xml(path: str) -> Callable[[Any], list[Any]] | None:
    """A dot path read on an XML answer: child elements from the root, a whole number the nth
    (from 0) of the elements found so far; None when a step is no XML name."""
    steps: list[str] = []
    for part in path.split("."):
        if part.isdigit() and part.isascii() and steps:
            steps[-1] += f"[{int(part) + 1}]"
        elif part == "*" or XML_NAME.match(part):
            steps.append("*" if part == "*" else "{*}" + part)
        else:
            return None
    return _xml_reader("/".join(steps), False, None)


def xpath(path: str) -> Callable[[Any], list[Any]] | str:
    """An XPath of the subset, or the reason it is not one."""
    rest, last = path, None
    if rest.endswith("/text()"):
        rest = rest[:-len("/text()")]
    else:
        head, slash, attribute = rest.rpartition("/@")
        if slash:
            if not XML_NAME.match(attribute):
                return f"{path!r}: @{attribute} is not an attribute name"
            rest, last = head, attribute
    if rest.startswith("//"):
        absolute, translated, rest = True, ".//", rest[2:]
    elif rest.startswith("/"):
        absolute, translated, rest = True, "", rest[1:]
    else:
        return f"{path!r}: an XPath starts with / or //"
    steps = re.split(r"(//|/)", rest)
    for k, step in enumerate(steps):
        if k % 2:
            translated += step
            continue
        match = _STEP.match(step)
        if not match:
            return f"{path!r}: {step!r} is not a step of the XPath subset (name or *, then [predicates])"
        name = match["name"]
        translated += name if name == "*" else "{*}" + name
        predicates = match["preds"]
        while predicates:
            predicate = _PREDICATE.match(predicates)
            if not predicate:
                return f"{path!r}: {predicates!r} is not a predicate of the subset ([n], [last()], [@a], [@a='v'], [c], [c='v'])"
            if predicate["index"] is not None:
                translated += f"[{predicate['index']}]"
            else:
                name_ = ("@" if predicate["attr"] else "{*}") + predicate["name"]
                value = predicate["value"]
                translated += f"[{name_}]" if value is None else f"[{name_}={predicate['q']}{value}{predicate['q']}]"
            predicates = predicates[predicate.end():]
    try:
        ElementTree.Element("check").findall(translated)
    except (SyntaxError, KeyError, TypeError) as exc:
        return f"{path!r}: not an XPath this reader runs ({exc})"
    return _xml_reader(translated, absolute, last)


def regex(pattern: str, where: str, problems: Problems, groups: int) -> re.Pattern[str] | None:
    """A pattern, matched in any case, with at least ``groups`` groups."""
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        problems.append((where, f"not a valid regular expression: {exc}"))
        return None
    if compiled.groups < groups:
        problems.append((where, "the regex needs a group, as in id=(\\d+): the group is the value"))
        return None
    return compiled
