"""gristmill's Python wrapper: runs `main(**args)` of the job's code, per runtimes/PROTOCOL.md.

Started by the sandbox before the job is known; it reads the job message on fd 4,
then loads the user's code, binds the arguments to the entry point's parameters,
calls it and writes the result or the error on fd 3. Standard library only, and
as little of it as possible: every import here is paid by every job.
"""

import os
import sys
import types

try:
    # The C accelerator behind `json`, used directly: `import json` also imports
    # `re`, `enum` and `collections`, ~5 ms of every job. These are the very scanner
    # and encoder that `json.loads` and `json.dumps` use, so the text is the same.
    from _json import encode_basestring, encode_basestring_ascii, make_encoder, make_scanner
except ImportError:  # an interpreter built without it: `_loads`/`_dumps` use `json`
    make_scanner = make_encoder = None

RESULT_FD = 3
JOB_FD = 4
JOB_DIR = "/job"
# Set when the job has dependencies: their environment, mounted read-only.
ENVIRONMENT_VARIABLE = "GRISTMILL_ENVIRONMENT"

# Annotation names checked against the JSON value given; anything else is not checked.
_JSON_TYPES = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
    "List": (list,),
    "Dict": (dict,),
}


_JSON_WHITESPACE = " \t\n\r"
_JSON_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _DecoderSettings:
    """What a default `json.JSONDecoder` hands the C scanner."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _JSON_CONSTANTS.__getitem__


def _loads(data):
    """`json.loads(data)`: the C scanner on UTF-8 text, `json` for anything else (a BOM,
    another encoding, an error to raise), so the answer is always `json.loads`'s."""
    if make_scanner is not None:
        try:
            text = data.decode("utf-8")
            start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
            value, end = make_scanner(_DecoderSettings())(text, start)
            if not text[end:].strip(_JSON_WHITESPACE):
                return value
        except (ValueError, StopIteration):
            pass
    import json

    return json.loads(data)


def _not_serializable(value):
    """`json.JSONEncoder.default`: what cannot be encoded, with its very message."""
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _dumps(value, ensure_ascii):
    """`json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=False)`: NaN and infinities
    are refused (ValueError), other non-JSON values raise TypeError, integers stay exact."""
    if make_encoder is None:
        import json

        return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=False)
    strings = encode_basestring_ascii if ensure_ascii else encode_basestring
    # json.dumps's own arguments for the C encoder: circular-reference markers, no
    # indent, its separators, no key sorting, no skipped keys, allow_nan=False.
    encode = make_encoder({}, _not_serializable, strings, None, ": ", ", ", False, False, False)
    return "".join(encode(value, 0))


class ArgumentError(Exception):
    """The arguments do not fit the entry point's parameters."""


def _annotation_types(annotation):
    """(accepted types, None allowed) for an annotation, or None when it is not checked."""
    if isinstance(annotation, type):
        text = annotation.__name__
    elif isinstance(annotation, str):
        text = annotation.replace(" ", "")
    else:
        text = str(annotation).replace("typing.", "").replace(" ", "")
    optional = False
    if text.startswith("Optional[") and text.endswith("]"):
        text, optional = text[len("Optional[") : -1], True
    parts = text.split("|")
    if "None" in parts:
        parts.remove("None")
        optional = True
    accepted = ()
    for part in parts:
        base = part.split("[", 1)[0]
        if base not in _JSON_TYPES:
            return None
        accepted += _JSON_TYPES[base]
    return accepted, optional


def _check_type(name, value, annotation):
    checked = _annotation_types(annotation)
    if checked is None:
        return
    accepted, optional = checked
    if value is None and optional:
        return
    is_bool = isinstance(value, bool)
    if (is_bool and bool not in accepted) or not isinstance(value, accepted):
        expected = (
            annotation
            if isinstance(annotation, str)
            else getattr(annotation, "__name__", str(annotation))
        )
        got = "null" if value is None else type(value).__name__
        raise ArgumentError(f"argument {name!r} must be {expected}, got {got}")


def bind(function, args):
    """The keyword arguments for `function`, or ArgumentError naming what does not fit."""
    code = function.__code__
    positional = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    names = positional[code.co_posonlyargcount :]
    accepts_any = bool(code.co_flags & 0x08)  # **kwargs
    defaults = function.__defaults__ or ()
    first_default = code.co_argcount - len(defaults)
    kw_defaults = function.__kwdefaults__ or {}
    annotations = getattr(function, "__annotations__", {})
    if code.co_posonlyargcount:
        raise ArgumentError("positional-only parameters cannot be given by name")
    unknown = [key for key in args if key not in names]
    if unknown and not accepts_any:
        raise ArgumentError(f"unknown argument {unknown[0]!r}; parameters: {', '.join(names)}")
    for index, name in enumerate(names):
        has_default = (index >= first_default and index < code.co_argcount) or name in kw_defaults
        if name not in args:
            if not has_default:
                raise ArgumentError(f"missing argument {name!r}")
            continue
        if name in annotations:
            _check_type(name, args[name], annotations[name])
    return dict(args)


def _frames(error):
    """The user's frames of `error`'s traceback, innermost last."""
    import traceback

    frames = []
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.startswith(JOB_DIR + "/"):
            frames.append(
                {
                    "file": frame.filename[len(JOB_DIR) + 1 :],
                    "line": frame.lineno or 0,
                    "function": frame.name,
                    "text": frame.line or "",
                }
            )
    return frames


def _print_traceback(error):
    import traceback

    lines = ["Traceback (most recent call last):\n"]
    for frame in _frames(error):
        lines.append(f'  File "{frame["file"]}", line {frame["line"]}, in {frame["function"]}\n')
        if frame["text"]:
            lines.append(f"    {frame['text']}\n")
    lines.extend(traceback.format_exception_only(type(error), error))
    sys.stderr.write("".join(lines))


def _report(channel, message):
    channel.write(_dumps(message, ensure_ascii=False))
    channel.flush()


def _error(name, message, stack=(), verdict="ERROR"):
    return {"error": {"name": name, "message": message, "stack": list(stack)}, "verdict": verdict}


def run(job):
    source_path = job["source"]
    with open(source_path, encoding="utf-8") as source:
        code = compile(source.read(), source_path, "exec")
    script = job.get("script")
    # A script runs as the program itself would: as __main__, with its arguments in argv.
    module = types.ModuleType("main" if script is None else "__main__")
    module.__file__ = source_path
    sys.modules[module.__name__] = module
    sys.path.insert(0, JOB_DIR)
    if script is not None:
        sys.argv = [source_path, *script]
    exec(code, module.__dict__)
    if script is not None:
        return {"result": None}
    entry = job["entry_point"]
    function = module.__dict__.get(entry)
    if not callable(function) or not hasattr(function, "__code__"):
        return _error("EntryPointNotFound", f"the code defines no function {entry!r}")
    try:
        kwargs = bind(function, job["args"])
    except ArgumentError as error:
        return _error("InvalidArguments", str(error), verdict="INVALID_ARGUMENTS")
    result = function(**kwargs)
    if isinstance(result, types.CoroutineType):
        import asyncio

        result = asyncio.run(result)
    try:
        _dumps(result, ensure_ascii=True)
    except (TypeError, ValueError) as error:
        return _error(
            "ResultNotSerializable",
            f"{entry} returned a {type(result).__name__}, which is not JSON-serialisable: {error}",
        )
    return {"result": result}


def _add_environment():
    """Puts the job's installed packages on sys.path (after the standard library), with
    their .pth files: the interpreter runs with -S, so no site-packages is there by itself."""
    environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if environment:
        import site

        site.addsitedir(environment + "/site-packages")


def _take_context(data):
    """Sets the job's context variables that head the job message (`NAME=value`, each
    ended by a NUL byte, then a lone NUL) and returns the message after them."""
    start = 0
    while True:
        end = data.index(b"\0", start)
        if end == start:
            return data[end + 1 :]
        name, _, value = data[start:end].decode().partition("=")
        os.environ[name] = value
        start = end + 1


def main():
    # -I ignores PYTHONUNBUFFERED, and a pipe makes stdout block-buffered: a job's lines
    # should reach the caller's stream as they are printed.
    sys.stdout.reconfigure(line_buffering=True)
    channel = os.fdopen(RESULT_FD, "w", encoding="utf-8")
    os.set_inheritable(RESULT_FD, False)
    with os.fdopen(JOB_FD, "rb") as job_channel:
        job = _loads(_take_context(job_channel.read()))
    _add_environment()
    status = 0
    try:
        message = run(job)
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
        if code == 0:
            message = {"result": None}
        else:
            message = _error("SystemExit", f"exit status {error.code}", _frames(error))
            status = code
    except BaseException as error:
        _print_traceback(error)
        message = _error(type(error).__name__, str(error), _frames(error))
        status = 1
    _report(channel, message)
    # The job ends when its entry point returns: threads it left running (non-daemon
    # ones too) must not hold the outcome back, as the interpreter's exit would.
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib would be one more import for every job)
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _serve_template():
    """Template mode (`gristmill.isolation.template`, started by the fork server): this
    interpreter, its imports done, forks a child per job, which builds the job's jail and
    then runs main(). What the template imports for that is the service's own code."""
    package_root, requests_fd = sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, package_root)
    from gristmill.isolation.template import serve

    sys.path.remove(package_root)
    serve(requests_fd, main)


if sys.argv[1:2] == ["--template"]:
    _serve_template()  # never returns
main()
