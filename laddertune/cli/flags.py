"""Command-line flags generated from configuration dataclasses, and ``--config`` files merged under them.

Every option is declared once, as a dataclass field (:mod:`laddertune.fields`): its annotation gives the flag's
type, its default the flag's default, its attribute docstring the help text. :func:`add_flags` turns a dataclass
into a group of flags named after the options (``reduction_factor`` is ``--reduction-factor``); several classes may
share a flag (``--freeze-layers`` is an option of four methods), which then says whose it is.

Why not jsonargparse or ``transformers.HfArgumentParser``, which also read dataclasses: laddertune's flags are
flat and dashed (``--lora-rank``, not ``--method.lora_rank``) and keep the names they had before the options became
dataclasses, several methods' options share one flag, ``--help`` must not import torch or transformers (seconds),
and a flag must be told apart from its default (a config file's value stands unless the flag is given).
HfArgumentParser reads help only from field metadata and imports transformers. What is left to write is this
module: a type-to-argparse table over the fields.

Flags default to "not given" (argparse's ``SUPPRESS``), so :func:`given_options` returns exactly what the user
typed; :func:`read_config_file` reads a YAML or JSON file of the same option names, and the command merges the two
(flags win).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.util
import inspect
import json
import re
import textwrap
import typing
from pathlib import Path

from ..errors import ConfigError
from ..fields import RECORD, SETTING, field_types, option_name


@dataclasses.dataclass
class Flag:
    """One flag: the option it sets and the classes (sections, methods) that declare it."""

    option: str
    dest: str
    owners: list[str]
    defaults: list
    cli_default: object = dataclasses.field(default_factory=lambda: dataclasses.MISSING)
    """The command line's own default (``--epochs``: 3), applied under a config file's value."""


def add_flags(
    group, cls, flags: dict[str, Flag], owner: str | None = None, skip: tuple[str, ...] = ()
) -> None:
    """Add a flag to ``group`` for every option of dataclass ``cls`` not in ``flags`` yet (records and
    config-file-only settings have none); ``owner`` names a method whose option it is, for the help text."""
    docs = attribute_docs(cls)
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("kind") in (RECORD, SETTING) or f.name in skip:
            continue
        option = option_name(f)
        default = f.metadata.get("cli_default", f.default)
        if option in flags:
            flags[option].owners.append(owner)
            flags[option].defaults.append(default)
            continue
        flags[option] = Flag(
            option,
            option,
            [owner] if owner else [],
            [default],
            f.metadata.get("cli_default", dataclasses.MISSING),
        )
        names = [f"--{name.replace('_', '-')}" for name in (option, *f.metadata.get("aliases", ()))]
        group.add_argument(*names, **_argument(f, types[f.name], docs.get(f.name, "")))


def _argument(f: dataclasses.Field, tp, doc: str) -> dict:
    kwargs: dict = {"dest": option_name(f), "default": argparse.SUPPRESS, "help": first_sentence(doc)}
    tp, optional = _unwrap(tp)
    meta = f.metadata
    if tp is bool:
        default = meta.get("cli_default", f.default)
        kwargs["action"] = argparse.BooleanOptionalAction if optional or default is True else "store_true"
        return kwargs
    if "parse" in meta:
        kwargs["type"] = _argparse_type(meta["parse"])
    elif typing.get_origin(tp) in (list, tuple):
        kwargs["type"] = str  # comma-separated: the field's check turns "1,2,3" into a list
    elif tp in (int, float, str):
        kwargs["type"] = tp
    if "choices" in meta:
        kwargs["choices"] = meta["choices"]
    kwargs["metavar"] = meta.get("metavar")
    return kwargs


def _argparse_type(parse):
    """A parser that raises ValueError, as argparse's ``type`` (argparse then prints the message)."""

    @functools.wraps(parse)
    def run(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return run


def _unwrap(tp):
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def finish_help(parser: argparse.ArgumentParser, flags: dict[str, Flag]) -> None:
    """Append each flag's default (one, from its declaration) and, for a method's option, the methods that take it."""
    for action in parser._actions:
        flag = flags.get(action.dest)
        if flag is None or action.help is argparse.SUPPRESS:
            continue
        extra = []
        defaults = {_show(d) for d in flag.defaults if d not in (None, False, dataclasses.MISSING)}
        if len(defaults) == 1 and len(set(map(_show, flag.defaults))) == 1:
            extra.append(f"default: {defaults.pop()}")
        elif len(defaults) > 1:
            extra.append(
                "default: "
                + ", ".join(f"{_show(d)} ({o})" for d, o in zip(flag.defaults, flag.owners, strict=True))
            )
        if flag.owners:
            extra.append("methods: " + ", ".join(dict.fromkeys(flag.owners)))
        if extra:
            action.help = f"{action.help} [{'; '.join(extra)}]"


def _show(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def given_options(args: argparse.Namespace, flags: dict[str, Flag]) -> dict:
    """The options the command line set (flags left out are absent)."""
    return {name: getattr(args, name) for name in flags if hasattr(args, name)}


def cli_defaults(flags: dict[str, Flag]) -> dict:
    """The command line's own defaults, where they differ from the declarations' (``--epochs``: 3)."""
    return {name: f.cli_default for name, f in flags.items() if f.cli_default is not dataclasses.MISSING}


def read_config_file(path: str) -> dict:
    """A ``--config`` file: YAML (``.yaml``/``.yml``) or JSON, a mapping of option names (flat, or in sections).

    Raises:
        ConfigError: a missing, unreadable or malformed file, or one that is not a mapping.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {getattr(e, 'strerror', None) or e}") from None
    if file.suffix.lower() in (".yaml", ".yml"):
        import yaml  # deferred: only config files need it (PyYAML, installed with transformers)

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    else:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); YAML files end in .yaml or .yml") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option names to values, got {type(data).__name__}")
    return data


@functools.cache
def attribute_docs(cls) -> dict[str, str]:
    """Each field's attribute docstring (the string literal right after it in the class body), inherited ones
    included, whitespace collapsed."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def first_sentence(doc: str) -> str:
    """The help line of a docstring: its first sentence (argparse's % escaped)."""
    match = re.search(r"\.\s+(?=[A-Z(])", doc)  # "e.g. 1,2" is not a sentence's end
    text = doc if match is None else doc[: match.start() + 1]
    return text.replace("%", "%%")


def add_signature_flags(
    group,
    module: str,
    function: str,
    flags: dict[str, Flag],
    skip: tuple[str, ...] = (),
    aliases: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """Flags for the keyword arguments of ``module.function`` (its typed signature is the command's options, as in
    litgpt), help from its docstring's ``Args:``. Read from the source, not imported: a command's ``--help`` must
    not import torch. A parameter without a default is a required flag; ``aliases`` gives a parameter's other
    flag names."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    docs = _args_docs(ast.get_docstring(node) or "")
    params = [
        *zip(node.args.args[len(node.args.args) - len(node.args.defaults) :], node.args.defaults, strict=True)
    ]
    params = [(a, None) for a in node.args.args[: len(node.args.args) - len(node.args.defaults)]] + params
    params += list(zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True))
    for arg, default in params:
        if arg.arg in skip or arg.arg in flags:
            continue
        tp = eval(ast.unparse(arg.annotation), {"Path": Path}) if arg.annotation else str  # builtins only
        tp, _ = _unwrap(tp)
        value = ast.literal_eval(default) if default is not None else dataclasses.MISSING
        kwargs: dict = {"dest": arg.arg, "help": first_sentence(docs.get(arg.arg, ""))}
        if value is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = argparse.SUPPRESS
        if tp is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = tp if tp in (int, float) else str
        flags[arg.arg] = Flag(arg.arg, arg.arg, [], [None if value is dataclasses.MISSING else value])
        names = (arg.arg, *(aliases or {}).get(arg.arg, ()))
        group.add_argument(*(f"--{name.replace('_', '-')}" for name in names), **kwargs)


def _args_docs(doc: str) -> dict[str, str]:
    """``name -> description`` of a Google-style docstring's ``Args:`` section."""
    docs: dict[str, str] = {}
    lines = doc.split("Args:", 1)[1].splitlines() if "Args:" in doc else []
    name = None
    for line in lines:
        if line and not line.startswith(" "):
            break  # the next section
        stripped = line.strip()
        head, sep, rest = stripped.partition(":")
        if sep and line.startswith("    ") and not line.startswith("     ") and head.isidentifier():
            name = head
            docs[name] = rest.strip()
        elif name and stripped:
            docs[name] += " " + stripped
    return docs
