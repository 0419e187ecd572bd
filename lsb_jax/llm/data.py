"""Instruction data for causal LMs: rows -> validated examples -> token ids -> padded batches.

    spec = DatasetSpec("TIGER-Lab/MathInstruct", prompt_field="instruction",
                       response_field="output", domain_field="source")        # or a local .jsonl
    examples, report = load_examples(spec, tokenizer, PromptTemplate(), max_length=512)
    batches = BatchIterator(examples, Epochs(np.ones(len(examples), int)), data_key(rng),
                            batch_size=32, pad_id=pad_token_id(tokenizer))
    batch = next(batches)   # tokens, loss_mask, attention_mask [B, T]; example_id, loss_weight [B]

Rows come from a Hugging Face hub dataset (`datasets.load_dataset`) or a local JSON (a list of
objects), JSONL or parquet file. Each row is validated (`validate_row`): the prompt and response
fields must be present, strings, non-empty, valid UTF-8, and the templated example must fit in
`max_length` tokens. A bad row raises `DataError` naming the file, the row (0-based index in the
source; JSONL also gives the line) and the field, or with `on_error="skip"` is dropped and
counted in the `ValidationReport`. Survivors are numbered 0..N-1 in source order: the stable
example id of per-example losses. An optional domain column (e.g. MathInstruct's `source`) maps
to integer domain ids in sorted name order.

Templating (`PromptTemplate`): the tokenizer's chat template when it has one (`kind="auto"`),
else a plain format with a `{prompt}` slot (Alpaca's, as the S2L/MathInstruct code uses). The
prompt and the response are tokenized separately and concatenated, so the response-only loss
mask covers exactly the response ids (plus eos in the plain format, plus the end-of-turn tokens
of a chat template), and evaluation prompts are the same ids the model was trained on.

Batches are right-padded: loss_mask[b, t] = 1 iff token t of row b is a response token (token t
is predicted from tokens < t, as `models.lm.loss.sequence_loss` reads it). `BatchIterator` draws
each step's examples from a `lsb_jax.data` sampler (pure in (key, step): `Epochs` shuffles
deterministically per epoch and duplicates upsampled examples, `Mixture` weights domains) or
from `LengthBucketedEpochs` (similar lengths share a batch: less padding); its state is the
step, so a resumed iterator continues identically. Lengths are padded up to a multiple of
`length_multiple`, so few distinct shapes are compiled.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import zlib
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import jax
import numpy as np

from lsb_jax import io
from lsb_jax.config import ConfigError
from lsb_jax.data.samplers import Draw, Mixture
from lsb_jax.errors import UsageError

ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately "
          "completes the request.\n\n### Instruction:\n{prompt}\n\n### Response:\n")
FORMATS = {".json": "json", ".jsonl": "jsonl", ".json.gz": "json", ".jsonl.gz": "jsonl", ".parquet": "parquet"}
DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".arrow", ".gz", ".zip", ".zst", ".bz2", ".xz", ".ndjson")  # local-looking too
MAX_SKIP_FRACTION = 0.01   # load_examples(on_error="skip") fails when more rows than this are dropped


class DataError(UsageError, ValueError):
    """A bad row: names the file, the row (0-based; JSONL: also the 1-based line) and the field."""

    def __init__(self, file: str, row: int | None, field: str | None, reason: str, line: int | None = None):
        self.file, self.row, self.field, self.reason, self.line = file, row, field, reason, line
        where = [file]
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}")


# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where rows come from and which fields they use.

    path: a hub dataset id ("org/name", or "org/name@revision": its snapshot in the Hugging Face
    cache, `hub_folder`, read by `datasets.load_dataset(folder, config, split=split)`) or a local .json/.jsonl
    (optionally gzipped: .json.gz/.jsonl.gz) or .parquet file; suffixes in any case, a UTF-8 BOM
    is ignored. A path that looks local (see `is_local`) is never sent to the hub. The prompt is
    `prompt_field` (plus `input_field` after a blank line when that is given and non-empty, as
    Alpaca-style sets store extra context); the response (train) or the reference solution
    (test) is `response_field`. `answer_format` says how evaluation reads the gold answer from
    the response: "gsm8k" (after "####"), "boxed" (last \\boxed{}), "raw" (the whole field),
    "extract" (`evaluate.extract_answer`).

    Conversations (the formats of TRL and most SFT sets): with `format="messages"` a row's
    `messages_field` is a list of {"role", "content"} turns whose last turn is the assistant's
    response (the only turn trained on) and whose earlier turns (system, user, earlier assistant
    turns) are the prompt, rendered by the tokenizer's chat template. With `format="fields"` the
    prompt field may also hold such a list (TRL's conversational prompt-completion: "prompt" a
    list of turns, "completion" a list of one assistant turn).
    """

    path: str
    config: str | None = None
    split: str = "train"
    prompt_field: str = "instruction"
    response_field: str = "output"
    input_field: str | None = None
    domain_field: str | None = None
    answer_format: Literal["gsm8k", "boxed", "raw", "extract"] = "extract"
    format: Literal["fields", "messages"] = "fields"
    messages_field: str = "messages"

    def __post_init__(self):
        for name in ("prompt_field", "response_field", "messages_field"):
            if not getattr(self, name):
                raise ValueError(f"DatasetSpec.{name} must be a non-empty field name")
        if self.format not in ("fields", "messages"):
            raise ValueError(f"DatasetSpec.format: expected 'fields' or 'messages', got {self.format!r}")
        if self.answer_format not in ("gsm8k", "boxed", "raw", "extract"):
            raise ValueError(f"DatasetSpec.answer_format: unknown {self.answer_format!r}")

    @property
    def label(self) -> str:
        """The name errors use for this source."""
        if is_local(self.path):
            return str(self.path)
        return ":".join(x for x in (self.path, self.config, self.split) if x)


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """kind "chat": `tokenizer.apply_chat_template` (user turn, optional system turn); "plain":
    `prompt_format` with `{prompt}` replaced; "auto": chat when the tokenizer has a chat template.
    `append_eos` (None: True for plain, False for chat, whose template closes the turn) adds the
    tokenizer's eos id to the response."""

    kind: Literal["auto", "chat", "plain"] = "auto"
    prompt_format: str = ALPACA
    system: str | None = None
    append_eos: bool | None = None

    def __post_init__(self):
        if self.kind not in ("auto", "chat", "plain"):
            raise ValueError(f"PromptTemplate.kind: unknown {self.kind!r}")
        if "{prompt}" not in self.prompt_format:
            raise ValueError("PromptTemplate.prompt_format must contain '{prompt}'")

    def resolve(self, tokenizer) -> str:
        if self.kind != "auto":
            if self.kind == "chat" and not getattr(tokenizer, "chat_template", None):
                raise ConfigError("template='chat' but the tokenizer has no chat template (use 'auto' or 'plain')")
            return self.kind
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


# ----------------------------------------------------------------------------- reading rows


@dataclasses.dataclass(frozen=True)
class RawRow:
    """One source record before validation: its index, JSONL line, and the parsed object (or the
    DataError that reading it raised)."""

    row: int
    line: int | None
    value: Any


def file_format(path: str | Path) -> str | None:
    """"json" / "jsonl" / "parquet" from the (case-insensitive, possibly .gz) suffix, else None."""
    name = Path(path).name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    return None


def is_local(path: str) -> bool:
    """A local file, not a hub id: it has a data-file suffix or `io.looks_local` (a typo in
    data/trian.jsonl is reported as a missing file, never looked up on the hub)."""
    return bool(file_format(path)) or Path(path).name.lower().endswith(DATA_SUFFIXES) or io.looks_local(path)


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _decode(raw: bytes) -> str:
    # surrogateescape keeps undecodable bytes as lone surrogates, so the row still parses and the
    # field holding them can be named (`_check_utf8`)
    return raw.decode("utf-8", errors="surrogateescape")


def read_rows(spec: DatasetSpec) -> Iterator[RawRow]:
    """The source's records in order (local files read here, hub datasets through `datasets`)."""
    path, label = Path(spec.path).expanduser(), spec.label
    if not is_local(spec.path):
        import datasets  # noqa: PLC0415 (heavy; only for hub sources)

        folder = hub_folder(spec)
        try:
            ds = datasets.load_dataset(str(folder), spec.config, split=spec.split)
        except (ValueError, FileNotFoundError) as e:   # e.g. no such config or split in the repository
            raise DataError(label, None, None, f"{type(e).__name__}: {' '.join(str(e).split())}") from None
        for i, value in enumerate(ds):
            yield RawRow(i, None, value)
        return
    check_local_file(spec)
    fmt = file_format(path)
    try:
        if fmt == "parquet":
            yield from _parquet_rows(path, label)
        elif fmt == "jsonl":
            yield from _jsonl_rows(path, label)
        else:
            yield from _json_rows(path, label)
    except (OSError, EOFError, zlib.error) as e:   # e.g. a truncated .gz
        raise DataError(label, None, None, f"unreadable ({type(e).__name__}: {e})") from None


HUB_DATA_FILES = ["*.parquet", "*.json", "*.jsonl", "*.json.gz", "*.jsonl.gz", "*.csv", "*.arrow", "README.md",
                  "*.yaml"]


def hub_folder(spec: DatasetSpec) -> Path:
    """The local snapshot of a hub dataset ("org/name" or "org/name@revision"): its data files in the
    Hugging Face cache (downloaded when online; with HF_HUB_OFFLINE=1 only the cache is read, and
    an uncached id is a one-line `DataError`). `datasets` then reads the split from the folder with
    its packaged builders (parquet, json, csv), as it reads the repository online."""
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    from lsb_jax.models.lm.checkpoint import split_revision  # noqa: PLC0415

    try:
        repo, revision = split_revision(spec.path)
        return Path(snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=HUB_DATA_FILES))
    except Exception as e:   # huggingface_hub's errors: not cached offline, no such repository or revision
        from huggingface_hub import constants  # noqa: PLC0415

        offline = " (HF_HUB_OFFLINE is set: only the local Hugging Face cache is read)" if constants.HF_HUB_OFFLINE \
            else ""
        raise DataError(spec.label, None, None, f"hub dataset {spec.path} not available{offline}: "
                                                f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None


def check_local_file(spec: DatasetSpec) -> None:
    """A `DataError` unless the spec's local path is a readable file of a known format (checked
    before any compute: a missing file, a folder, an unknown suffix)."""
    path, label = Path(spec.path).expanduser(), spec.label
    if not path.exists():
        raise DataError(label, None, None, "no such file")
    if path.is_dir():
        raise DataError(label, None, None, f"is a folder; expected a file ({', '.join(FORMATS)})")
    if file_format(path) is None:
        raise DataError(label, None, None, f"unknown file type (expected one of {', '.join(FORMATS)}, any case)")


def _strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def _parquet_rows(path: Path, label: str) -> Iterator[RawRow]:
    import pyarrow  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as e:
        raise DataError(label, None, None, f"not a readable parquet file ({type(e).__name__}: {e})") from None
    for i, value in enumerate(table.to_pylist()):
        yield RawRow(i, None, value)


def _jsonl_rows(path: Path, label: str) -> Iterator[RawRow]:
    row = 0
    with _open_binary(path) as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                value = json.loads(_decode(raw))
            except json.JSONDecodeError as e:
                value = DataError(label, row, None, f"invalid JSON ({e.msg} at column {e.colno})", line_no)
            yield RawRow(row, line_no, value)
            row += 1


def _json_rows(path: Path, label: str) -> Iterator[RawRow]:
    """A .json file: a list of objects."""
    with _open_binary(path) as f:
        text = _strip_bom(_decode(f.read()))
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (one object per line? name the file .jsonl)" if e.msg == "Extra data" else ""
        raise DataError(label, None, None, f"invalid JSON ({e.msg} at line {e.lineno}){hint}") from None
    if not isinstance(values, list):
        raise DataError(label, None, None, f"a .json file must hold a list of objects, got {type(values).__name__}")
    for i, value in enumerate(values):
        yield RawRow(i, None, value)


# ----------------------------------------------------------------------------- validation


Turn = tuple[str, str]   # (role, content) of one conversation turn


@dataclasses.dataclass(frozen=True)
class Row:
    """A validated row: prompt/response text, domain name (or None), its source row index (and
    JSONL line). A conversation's prompt is its `turns` ((role, content) pairs before the response,
    rendered by a chat template); `prompt` is then the text of its last user turn (what reports,
    answer checks and duplicate filters read)."""

    prompt: str
    response: str
    domain: str | None
    source_row: int
    source_line: int | None = None
    turns: tuple[Turn, ...] = ()

    def __post_init__(self):   # rows read back from JSON carry lists
        object.__setattr__(self, "turns", tuple((str(r), str(c)) for r, c in self.turns))

    @property
    def query(self) -> str | tuple[Turn, ...]:
        """What the template renders as the prompt: the turns of a conversation, else the text."""
        return self.turns or self.prompt


def _check_utf8(err, field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise err(field, f"invalid UTF-8 (undecodable byte or lone surrogate at character {e.start})") from None


def _text_field(err, value: Mapping, field: str, *, required: bool) -> str | None:
    if field not in value or value[field] is None:
        if required:
            raise err(field, "missing field")
        return None
    text = value[field]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise err(field, f"invalid UTF-8 (byte {e.start})") from None
    if not isinstance(text, str):
        raise err(field, f"wrong type: expected a string, got {type(text).__name__}")
    _check_utf8(err, field, text)
    return text


ROLES = ("system", "user", "assistant", "tool")


def _turns(err, value: Any, field: str) -> list[Turn]:
    """A list of {"role", "content"} objects -> [(role, content)]; a `DataError` naming the field
    and the turn otherwise (not a list, no role/content, unknown role, content not a string)."""
    if not isinstance(value, (list, tuple)):
        raise err(field, f"wrong type: expected a list of {{role, content}} turns, got {type(value).__name__}")
    if not value:
        raise err(field, "empty conversation")
    out = []
    for j, turn in enumerate(value):
        where = f"{field}[{j}]"
        if not isinstance(turn, Mapping) or "role" not in turn or "content" not in turn:
            raise err(where, "expected an object with 'role' and 'content'")
        role = turn["role"]
        if role not in ROLES:
            raise err(f"{where}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        text = _text_field(err, {f"{where}.content": turn["content"]}, f"{where}.content", required=True)
        out.append((role, text))
    return out


def _prompt_turns(err, turns: list[Turn], field: str) -> str:
    """The text of the last user turn of a prompt conversation (which must have one)."""
    users = [c for r, c in turns if r == "user"]
    if not users:
        raise err(field, "the prompt conversation has no user turn")
    if not users[-1].strip():
        raise err(field, "empty prompt")
    return users[-1]


def _conversation(err, value: Mapping, spec: DatasetSpec) -> tuple[str, str, tuple[Turn, ...]]:
    """(prompt text, response, prompt turns) of a row in the "messages" format."""
    field = spec.messages_field
    if field not in value or value[field] is None:
        raise err(field, "missing field")
    turns = _turns(err, value[field], field)
    if turns[-1][0] != "assistant":
        raise err(f"{field}[{len(turns) - 1}].role", f"the last turn must be the assistant's response, "
                                                     f"got {turns[-1][0]!r}")
    prompt = _prompt_turns(err, turns[:-1], field)
    return prompt, turns[-1][1], tuple(turns[:-1])


def _prompt_completion(err, value: Mapping, spec: DatasetSpec) -> tuple[str, str, tuple[Turn, ...]]:
    """(prompt text, response, prompt turns or ()) of a row in the "fields" format, where the prompt
    may be a conversation and the response a list of one assistant turn (TRL's conversational
    prompt-completion)."""
    raw_prompt, raw_response = value.get(spec.prompt_field), value.get(spec.response_field)
    turns: tuple[Turn, ...] = ()
    if isinstance(raw_prompt, (list, tuple)):
        turns = tuple(_turns(err, raw_prompt, spec.prompt_field))
        prompt = _prompt_turns(err, list(turns), spec.prompt_field)
    else:
        prompt = _text_field(err, value, spec.prompt_field, required=True)
    if isinstance(raw_response, (list, tuple)):
        reply = _turns(err, raw_response, spec.response_field)
        if len(reply) != 1 or reply[0][0] != "assistant":
            raise err(spec.response_field, "a conversational completion must be one assistant turn")
        response = reply[0][1]
    else:
        response = _text_field(err, value, spec.response_field, required=True)
    return prompt, response, turns


def validate_row(raw: RawRow, spec: DatasetSpec, *, max_chars: int | None = None) -> Row:
    """The row's texts, or a `DataError` (missing field, wrong type, empty prompt/response,
    invalid UTF-8, longer than `max_chars` characters, a malformed conversation)."""
    if isinstance(raw.value, DataError):
        raise raw.value

    def err(field, reason):
        return DataError(spec.label, raw.row, field, reason, raw.line)

    value = raw.value
    if not isinstance(value, Mapping):
        raise err(None, f"expected an object, got {type(value).__name__}")
    if spec.format == "messages":
        prompt, response, turns = _conversation(err, value, spec)
        prompt_field = response_field = spec.messages_field
    else:
        prompt, response, turns = _prompt_completion(err, value, spec)
        prompt_field, response_field = spec.prompt_field, spec.response_field
    extra = _text_field(err, value, spec.input_field, required=False) if spec.input_field else None
    for field, text, what in ((prompt_field, prompt, "prompt"), (response_field, response, "response")):
        if not text.strip():
            raise err(field, "empty " + what)
        if max_chars is not None and len(text) > max_chars:
            raise err(field, f"too long: {len(text)} characters > max_chars={max_chars}")
    if extra and extra.strip():
        if turns:
            raise err(spec.input_field, "input_field is for plain-text prompts, not conversations")
        prompt = f"{prompt}\n\n{extra}"
    domain = None
    if spec.domain_field:
        d = value.get(spec.domain_field)
        if d is None:
            raise err(spec.domain_field, "missing field")
        if isinstance(d, bool) or not isinstance(d, (str, int)):
            raise err(spec.domain_field, f"wrong type: expected a string or int, got {type(d).__name__}")
        domain = str(d)
        _check_utf8(err, spec.domain_field, domain)
    return Row(prompt, response, domain, raw.row, raw.line, turns)


@dataclasses.dataclass
class ValidationReport:
    """What validation read, kept and skipped (by reason), with the first `max_kept` errors."""

    source: str
    read: int = 0
    kept: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)
    max_kept: int = 20

    def skip(self, error: DataError) -> None:
        reason = error.reason.split(" (")[0].split(":")[0]  # e.g. "missing field", "too long"
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.errors) < self.max_kept:
            self.errors.append(str(error))

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_json(self) -> dict:
        return {"source": self.source, "read": self.read, "kept": self.kept, "skipped": dict(self.skipped),
                "num_skipped": self.num_skipped, "errors": list(self.errors)}


def read_validated(spec: DatasetSpec, *, on_error: Literal["raise", "skip"] = "raise",
                   max_chars: int | None = None, report: ValidationReport | None = None
                   ) -> tuple[list[Row], ValidationReport]:
    """All valid rows of the source in order, and the report (see `validate_row`)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    report = report or ValidationReport(spec.label)
    rows = []
    for raw in read_rows(spec):
        report.read += 1
        try:
            rows.append(validate_row(raw, spec, max_chars=max_chars))
        except DataError as e:
            if on_error == "raise":
                raise
            report.skip(e)
    report.kept = len(rows)
    if report.read == 0:
        raise DataError(spec.label, None, None, "no rows")
    return rows, report


def read_labels(spec: DatasetSpec, field: str, source_rows: Sequence[int]) -> list[str]:
    """The column `field` (as strings) at the given source rows, e.g. a planted difficulty level
    the pipeline never trains on; a row that lacks it (or a null) is a `DataError` naming the row."""
    wanted = {int(r) for r in source_rows}
    found: dict[int, str] = {}
    for raw in read_rows(spec):
        if raw.row in wanted:
            value = raw.value.get(field) if isinstance(raw.value, Mapping) else None
            if value is None:
                raise DataError(spec.label, raw.row, field, "missing field", raw.line)
            found[raw.row] = str(value)
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(spec.label, missing[0], field, "no such row")
    return [found[int(r)] for r in source_rows]


# ----------------------------------------------------------------------------- templating


Query = str | tuple[Turn, ...]   # a prompt: its text, or the turns of a conversation (`Row.query`)


def _messages(template: PromptTemplate, prompt: Query) -> list[dict]:
    turns = [("user", prompt)] if isinstance(prompt, str) else list(prompt)
    if template.system and not any(r == "system" for r, _ in turns):   # the conversation's own wins
        turns.insert(0, ("system", template.system))
    return [{"role": r, "content": c} for r, c in turns]


def plain_prompt(prompt: Query) -> str:
    """The text a plain template formats: the prompt, or a conversation's one user turn (a `ValueError`
    for a conversation with other turns: only a chat template renders those)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) != 1 or prompt[0][0] != "user":
        raise ValueError("a conversation with system or earlier turns needs a chat template (the tokenizer "
                         "has none, or template='plain')")
    return prompt[0][1]


def render(tokenizer, template: PromptTemplate, prompt: Query, response: str | None = None
           ) -> tuple[str, str | None]:
    """(prompt text, response text) as the model sees them. `prompt`: a text (one user turn) or
    a conversation's turns before the response (`Row.query`). Chat: the prompt is the template up
    to and including the assistant header (`add_generation_prompt`), the response whatever the full
    conversation adds after it (content and end-of-turn markers)."""
    kind = template.resolve(tokenizer)
    if kind == "plain":
        return template.prompt_format.replace("{prompt}", plain_prompt(prompt)), response
    messages = _messages(template, prompt)
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if response is None:
        return prompt_text, None
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt_text):
        raise ValueError("the chat template's conversation does not start with its generation prompt; "
                         "use PromptTemplate(kind='plain')")
    return prompt_text, full[len(prompt_text):]


def pad_token_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its eos token (Llama 3 and
    Pythia ship without a pad token; generation falls back the same way), else 0. Padded positions
    are masked out of attention and loss, so only a valid id matters."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def end_of_turn_ids(tokenizer, template: PromptTemplate) -> tuple[int, ...]:
    """The token a chat template writes right after the assistant's response (ChatML's <|im_end|>,
    Llama 3's <|eot_id|>, Gemma's <end_of_turn>) when it is a special or added token: a model
    fine-tuned on the template ends its answers with it, which is often not the tokenizer's eos.
    () for plain templates and for templates that write ordinary text there."""
    if template.resolve(tokenizer) == "plain":
        return ()
    probe = "lsb-probe-response"
    _, response = render(tokenizer, template, "Q", probe)
    if response is None or probe not in response:
        return ()
    ids = tokenizer(response.split(probe, 1)[1], add_special_tokens=False)["input_ids"]
    added = set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)
    return (int(ids[0]),) if ids and ids[0] in added else ()


def encode_prompt(tokenizer, template: PromptTemplate, prompt: Query) -> list[int]:
    """Token ids of the templated prompt (what generation starts from). Plain prompts get the
    tokenizer's special prefix (e.g. BOS); a chat template writes its own."""
    text, _ = render(tokenizer, template, prompt)
    plain = template.resolve(tokenizer) == "plain"
    return list(tokenizer(text, add_special_tokens=plain)["input_ids"])


def encode_examples(tokenizer, template: PromptTemplate, prompts: Sequence[Query], responses: Sequence[str]
                    ) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, response ids) per example, tokenized in batches (the tokenizer's fast path);
    the same ids as `encode_prompt` for the prompts. The loss mask covers exactly the response ids."""
    kind = template.resolve(tokenizer)
    append_eos = template.append_eos if template.append_eos is not None else kind == "plain"
    if append_eos and tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no eos token, which a plain template appends to every response "
                          "(give the model's tokenizer an eos_token, or use a chat template)")
    texts = [render(tokenizer, template, p, r) for p, r in zip(prompts, responses, strict=True)]
    prompt_ids = [list(x) for x in tokenizer([t for t, _ in texts], add_special_tokens=kind == "plain")["input_ids"]] \
        if texts else []
    response_ids = [list(x) for x in tokenizer([r for _, r in texts], add_special_tokens=False)["input_ids"]] \
        if texts else []
    if append_eos:
        for ids in response_ids:
            ids.append(int(tokenizer.eos_token_id))
    return prompt_ids, response_ids


# ----------------------------------------------------------------------------- tokenized sets


@dataclasses.dataclass(frozen=True)
class Examples:
    """N tokenized examples in one flat buffer. Example i's ids are
    tokens[offsets[i] : offsets[i] + lengths[i]], of which the first prompt_lengths[i] are the
    prompt. domain_N: int32 ids into `domain_names` (-1 when the set has no domain column)."""

    tokens: np.ndarray  # [sum lengths] int32
    offsets_N: np.ndarray  # [N] int64
    lengths_N: np.ndarray  # [N] int32
    prompt_lengths_N: np.ndarray  # [N] int32
    domain_N: np.ndarray  # [N] int32
    domain_names: tuple[str, ...]
    rows: tuple[Row, ...]

    def __len__(self) -> int:
        return len(self.lengths_N)

    def ids(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets_N[i]:self.offsets_N[i] + self.lengths_N[i]]

    def domain_sizes(self) -> np.ndarray:
        return np.bincount(self.domain_N, minlength=len(self.domain_names)) if self.domain_names else np.zeros(0, int)


def check_renders(rows: Sequence[Row], tokenizer, template: PromptTemplate, label: str, field: str, *,
                  responses: bool = True) -> None:
    """A `DataError` naming the first row (file, row, `field`) the template cannot render with this
    tokenizer: a conversation a plain template cannot hold, a turn a chat template refuses (e.g. a
    system turn), ...; with `responses=False` only the prompts (what generation renders)."""
    for row in rows:
        try:
            render(tokenizer, template, row.query, row.response if responses else None)
        except UsageError:
            raise
        except Exception as e:   # the template's own error (jinja's TemplateError, ValueError, ...)
            reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            kind = template.resolve(tokenizer)
            raise DataError(label, row.source_row, field, f"the {kind} template cannot render it: {reason}",
                            row.source_line) from None


def tokenize_rows(rows: Sequence[Row], tokenizer, template: PromptTemplate, *, max_length: int,
                  on_error: Literal["raise", "skip"] = "raise", report: ValidationReport | None = None,
                  spec: DatasetSpec | None = None, chunk: int = 1024, truncate: bool = False) -> Examples:
    """Tokenize validated rows; an example longer than `max_length` tokens raises a `DataError`
    (file, row, "prompt+response" fields) or, with `on_error="skip"`, is dropped and counted.
    `truncate`: its response is cut to fit instead (the end of the response, an eos included, is
    then not trained on); only a prompt that leaves no room for one response token is too long."""
    label = spec.label if spec else "<rows>"
    fields = (spec.messages_field if spec.format == "messages" else f"{spec.prompt_field}+{spec.response_field}") \
        if spec else "prompt+response"
    kept, ids, prompt_lengths = [], [], []
    encoded = ([], [])
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        try:
            pair = encode_examples(tokenizer, template, [r.query for r in part], [r.response for r in part])
        except UsageError:
            raise
        except Exception:
            check_renders(part, tokenizer, template, label, fields.split("+")[0])   # names the row, if one fails
            raise
        for acc, x in zip(encoded, pair):
            acc.extend(x)
    for row, p, r in zip(rows, *encoded):
        if truncate and len(p) < max_length:
            r = r[:max_length - len(p)]
        if len(p) + len(r) > max_length:
            e = DataError(label, row.source_row, fields,
                          f"too long: {len(p) + len(r)} tokens > max_length={max_length}", row.source_line)
            if on_error == "raise":
                raise e
            if report is not None:
                report.skip(e)
            continue
        kept.append(row)
        ids.append(np.asarray(p + r, np.int32))
        prompt_lengths.append(len(p))
    if report is not None:
        report.kept = len(kept)
    names = tuple(sorted({r.domain for r in kept if r.domain is not None}))
    lookup = {n: i for i, n in enumerate(names)}
    lengths = np.array([len(x) for x in ids], np.int32)
    return Examples(
        tokens=np.concatenate(ids) if ids else np.zeros(0, np.int32),
        offsets_N=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]]).astype(np.int64) if ids
        else np.zeros(0, np.int64),
        lengths_N=lengths, prompt_lengths_N=np.array(prompt_lengths, np.int32),
        domain_N=np.array([lookup.get(r.domain, -1) for r in kept], np.int32),
        domain_names=names, rows=tuple(kept))


def check_skipped(report: ValidationReport, max_skip_fraction: float | None, what: str = "") -> None:
    """A `DataError` when more than `max_skip_fraction` of the rows read were skipped (None: any
    number may be), naming the reasons and the first skipped row."""
    if report.read == 0:
        raise DataError(report.source, None, None, "no rows")
    if max_skip_fraction is None or report.num_skipped <= max_skip_fraction * report.read:
        return
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(report.skipped.items(), key=lambda x: -x[1]))
    first = f"; first: {report.errors[0]}" if report.errors else ""
    raise DataError(report.source, None, None,
                    f"{report.num_skipped} of {report.read} rows skipped ({reasons}), more than "
                    f"max_skip_fraction={max_skip_fraction:g}{what}{first}")


def load_examples(spec: DatasetSpec, tokenizer, template: PromptTemplate = PromptTemplate(), *,
                  max_length: int = 512, on_error: Literal["raise", "skip"] = "raise",
                  max_chars: int | None = None, max_skip_fraction: float | None = MAX_SKIP_FRACTION,
                  truncate: bool = False) -> tuple[Examples, ValidationReport]:
    """Read, validate and tokenize a source: (examples numbered 0..N-1, report). With
    `on_error="skip"` bad rows are dropped and counted, and more than `max_skip_fraction` of
    them (None: no limit) is a `DataError`."""
    rows, report = read_validated(spec, on_error=on_error, max_chars=max_chars)
    examples = tokenize_rows(rows, tokenizer, template, max_length=max_length, on_error=on_error,
                             report=report, spec=spec, truncate=truncate)
    hint = (f" (max_length={max_length})" if "too long" in report.skipped and not truncate else
            f" (max_length={max_length}: prompts alone too long)" if "too long" in report.skipped else "")
    check_skipped(report, max_skip_fraction, hint)
    if len(examples) == 0:
        raise DataError(spec.label, None, None,
                        f"no valid rows (read {report.read}, skipped {dict(report.skipped)}){hint}")
    return examples, report


# ----------------------------------------------------------------------------- batching


def pad_batch(examples: Examples, index_B: np.ndarray, *, pad_id: int, length_multiple: int = 64,
              length: int | None = None) -> dict[str, np.ndarray]:
    """Right-padded batch of examples `index_B` (T = the longest rounded up to `length_multiple`,
    or `length`): tokens, loss_mask (response tokens), attention_mask (real tokens) [B, T] int32,
    example_id [B] int32, and domain [B] int32 when the set has domains."""
    index_B = np.asarray(index_B, np.int64)
    longest = int(examples.lengths_N[index_B].max())
    T = length if length is not None else -(-longest // length_multiple) * length_multiple
    if longest > T:
        raise ValueError(f"an example of {longest} tokens does not fit the batch length {T}")
    B = len(index_B)
    tokens_BxT = np.full((B, T), pad_id, np.int32)
    loss_BxT = np.zeros((B, T), np.int32)
    attn_BxT = np.zeros((B, T), np.int32)
    for b, i in enumerate(index_B):
        n, p = examples.lengths_N[i], examples.prompt_lengths_N[i]
        tokens_BxT[b, :n] = examples.ids(i)
        attn_BxT[b, :n] = 1
        loss_BxT[b, p:n] = 1
    batch = {"tokens": tokens_BxT, "loss_mask": loss_BxT, "attention_mask": attn_BxT,
             "example_id": index_B.astype(np.int32)}
    if examples.domain_names:
        batch["domain"] = examples.domain_N[index_B]
    return batch


def _host_seed(key) -> list[int]:
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key) else key
    return [int(x) for x in np.asarray(data, np.uint32).ravel()]


class LengthBucketedEpochs:
    """Host-side epochs with length bucketing: each epoch shuffles the multiset {item i repeated
    counts_i times} (a numpy Generator seeded by (key, epoch)), sorts each window of
    `window * B` consecutive items by length, cuts it into batches of B, and shuffles the batch
    order. Every epoch has floor(E / B) batches (E = sum counts; the last E mod B shuffled items
    wait for a later epoch's luck). Same `sample(key, step, B) -> Draw` contract as the device
    samplers, evaluated on the host (`on_host = True`)."""

    on_host = True

    def __init__(self, lengths_N, counts=None, *, window: int = 64):
        self.lengths_N = np.asarray(lengths_N)
        counts = np.ones(len(self.lengths_N), np.int64) if counts is None else np.asarray(counts)
        if counts.shape != self.lengths_N.shape or np.any(counts < 0) or counts.sum() < 1:
            raise ValueError("LengthBucketedEpochs.counts: need non-negative integers per item with a positive sum")
        self.items_E = np.repeat(np.arange(len(counts)), counts.astype(np.int64))
        self.window = window
        self._cache: dict[tuple, np.ndarray] = {}

    @property
    def num_items(self) -> int:
        return len(self.lengths_N)

    def epoch_batches(self, key, epoch: int, batch_size: int) -> np.ndarray:
        """[floor(E / B), B] item indices of one epoch's batches, in order."""
        cache_key = (tuple(_host_seed(key)), epoch, batch_size)
        if cache_key not in self._cache:
            if len(self.items_E) < batch_size:
                raise ValueError(f"LengthBucketedEpochs: epoch of {len(self.items_E)} items < batch size {batch_size}")
            rng = np.random.default_rng([*_host_seed(key), epoch])
            order = self.items_E[rng.permutation(len(self.items_E))]
            span = self.window * batch_size
            chunks = [c[np.argsort(self.lengths_N[c], kind="stable")] for c in
                      (order[s:s + span] for s in range(0, len(order), span))]
            order = np.concatenate(chunks)
            n = len(order) // batch_size
            batches = order[:n * batch_size].reshape(n, batch_size)
            self._cache = {cache_key: batches[rng.permutation(n)]}  # keep one epoch
        return self._cache[cache_key]

    def sample(self, key, step: int, batch_size: int) -> Draw:
        per_epoch = len(self.items_E) // batch_size
        index_B = self.epoch_batches(key, int(step) // per_epoch, batch_size)[int(step) % per_epoch]
        return Draw(index_B.astype(np.int32), np.ones(batch_size, np.float32))


class BatchIterator:
    """Padded training batches: step s takes `sampler.sample(key, s, B)` -> (positions into
    `pool`, loss weights), maps positions to example ids through `pool` (default: the identity;
    see `domain_mixture`), and pads them (`pad_batch`) with "loss_weight" [B] float32 added.

    A pure function of (key, step): `batch_at(step)`; iteration advances the step, and
    `get_state()` / `set_state()` ({"step": s}) resume exactly (the `fit` loop stores them)."""

    def __init__(self, examples: Examples, sampler, key, batch_size: int, *, pad_id: int,
                 pool=None, length_multiple: int = 64, length: int | None = None, step: int = 0):
        self.examples, self.sampler, self.key = examples, sampler, key
        self.batch_size, self.pad_id = int(batch_size), int(pad_id)
        self.pool = np.arange(len(examples)) if pool is None else np.asarray(pool, np.int64)
        if sampler.num_items != len(self.pool):
            raise ValueError(f"the sampler draws from {sampler.num_items} items but the pool has {len(self.pool)}")
        if len(self.pool) and (self.pool.min() < 0 or self.pool.max() >= len(examples)):
            raise ValueError(f"pool indices must lie in [0, {len(examples)})")
        self.length_multiple, self.length = length_multiple, length
        self.step = int(step)
        if getattr(sampler, "on_host", False):
            self._draw = lambda key, step: sampler.sample(key, step, self.batch_size)
        else:
            self._draw = jax.jit(lambda key, step: sampler.sample(key, step, self.batch_size))

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        index_B, weight_B = jax.device_get(self._draw(self.key, np.int32(step)))
        batch = pad_batch(self.examples, self.pool[np.asarray(index_B)], pad_id=self.pad_id,
                          length_multiple=self.length_multiple, length=self.length)
        batch["loss_weight"] = np.asarray(weight_B, np.float32)
        return batch

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: Mapping) -> None:
        self.step = int(state["step"])


def domain_mixture(examples: Examples, sampling_weights, loss_weights=None) -> tuple[Mixture, np.ndarray]:
    """A `Mixture` over the set's domains and the pool that makes it draw example ids: `Mixture`
    owns consecutive index ranges per domain, so the pool lists example ids grouped by domain id
    (source order within a domain). Use as `BatchIterator(examples, mixture, key, B, pool=pool)`."""
    if not examples.domain_names:
        raise ValueError("domain_mixture: the examples have no domain column (DatasetSpec.domain_field)")
    pool = np.argsort(examples.domain_N, kind="stable")
    sizes = tuple(int(s) for s in examples.domain_sizes())
    return Mixture(sizes, sampling_weights, loss_weights), pool
