"""The cleaning rules, one chunk of raw strings at a time: each repairs a value (counted) or rejects the row with a
reason; every raw row ends up cleaned, quarantined or removed as a duplicate, never dropped without a count."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from healthcare_assets.domain import schema
from healthcare_assets.domain.privacy import patient_ids

# Tokens whose letter case str.title() gets wrong.
_NAME_TOKENS = {"Md": "MD", "Dds": "DDS", "Dvm": "DVM", "Phd": "PhD", "Ii": "II", "Iii": "III", "Iv": "IV"}
_NAME_TOKEN_RE = re.compile(r"\b(" + "|".join(_NAME_TOKENS) + r")\b")
_SPACES_RE = r"\s+"

QUARANTINE_COLUMNS = ["line_number", *schema.CSV_COLUMNS.values(), "reason"]
# What cleaning counts for a file: its rows (in = cleaned + quarantined + duplicates), and its repairs.
ROW_COUNTS = ("rows_in", "rows_cleaned", "rows_quarantined", "duplicates_removed")
REPAIRS = ("negative_billing_corrected", "names_normalized", "hospital_names_trimmed", "categories_canonicalized")


def normalize_names(names: pd.Series) -> pd.Series:
    """'mrs. brandy FLOWERS' -> 'Mrs. Brandy Flowers', 'desiree williams md' -> 'Desiree Williams MD'."""
    titled = names.str.replace(_SPACES_RE, " ", regex=True).str.strip().str.title()
    return titled.str.replace(_NAME_TOKEN_RE, lambda m: _NAME_TOKENS[m.group(1)], regex=True)


def normalize_hospitals(hospitals: pd.Series) -> pd.Series:
    """'Hernandez Rogers and Vang,' -> 'Hernandez Rogers and Vang' (the export's trailing commas)."""
    return hospitals.str.replace(_SPACES_RE, " ", regex=True).str.strip(" ,")


RECORD_KEY_LABEL = b"record-key"


def record_key_secret(pseudonym_key: bytes) -> bytes:
    """Derived under a label of its own: a record key and a patient_id are never made with the same key."""
    return hmac.new(pseudonym_key, RECORD_KEY_LABEL, hashlib.sha256).digest()


def keyed_record_key(row_digest: str, secret: bytes) -> str:
    return hmac.new(secret, row_digest.encode(), hashlib.sha256).hexdigest()[:32]


def record_keys(frame: pd.DataFrame, secret: bytes) -> pd.Series:
    """Equal rows, equal keys, whatever file they came in. Keyed: the record key is an _id in every backup, beside the
    row's other fields in clear, and a plain hash would let anyone hash candidate names with them until one matched.
    The HMAC is over the row's SHA-256 (the unkeyed record key), so an existing document is re-keyed from its _id."""
    columns = [frame[field].astype(str) for field in schema.FIELDS]
    joined = columns[0].str.cat(columns[1:], sep="\x1f")
    return joined.map(lambda text: keyed_record_key(hashlib.sha256(text.encode()).hexdigest()[:32], secret))


class SeenKeys:
    """A sorted array of 16-byte digests: 16 bytes a row however wide, a chunk looked up by binary search."""

    def __init__(self) -> None:
        self.digests = np.empty(0, dtype="S16")

    def __len__(self) -> int:
        return len(self.digests)

    def add(self, keys: pd.Series) -> np.ndarray:
        """A mask of the keys met before (earlier in the chunk or before it): the first of equal rows is kept."""
        chunk = np.fromiter((bytes.fromhex(k) for k in keys), dtype="S16", count=len(keys))
        seen = np.zeros(len(chunk), bool)
        if len(self.digests):
            at = np.minimum(np.searchsorted(self.digests, chunk), len(self.digests) - 1)
            seen = self.digests[at] == chunk
        unique, first = np.unique(chunk, return_index=True)  # sorted, first occurrences
        repeated = np.ones(len(chunk), bool)
        repeated[first] = False
        new = unique[~seen[first]]
        self.digests = np.insert(self.digests, np.searchsorted(self.digests, new), new)
        return seen | repeated


@dataclass
class CleanedChunk:
    cleaned: pd.DataFrame  # typed, CLEANED_COLUMNS
    quarantined: pd.DataFrame  # QUARANTINE_COLUMNS
    counts: Counter  # what each rule changed or rejected


class Rejections:
    """The first broken rule of each row of a chunk (its quarantine reason), counted per rule."""

    def __init__(self, index: pd.Index, counts: Counter):
        self.reasons = pd.Series("", index=index, dtype=object)
        self.counts = counts

    def __call__(self, mask: pd.Series, column: str, rule: str, detail: pd.Series | None = None) -> None:
        mask = mask.fillna(False).astype(bool) & (self.reasons == "")  # the first broken rule is the reason
        if mask.any():
            reason = f"{column}: {rule}"
            self.counts[f"quarantined: {reason}"] += int(mask.sum())
            self.reasons[mask] = reason if detail is None else reason + " (" + detail[mask] + ")"

    @property
    def rejected(self) -> pd.Series:
        return self.reasons != ""


def _got(text: pd.DataFrame, field: str) -> pd.Series:
    return "got '" + text[field] + "'"


def _numbers(text: pd.DataFrame, out: pd.DataFrame, reject: Rejections) -> pd.Series:
    """Whole numbers in range; billing made positive. Returns which amounts were negative."""
    for field, low, high in (("age", *schema.AGE_RANGE), ("room_number", *schema.ROOM_RANGE)):
        number = pd.to_numeric(text[field], errors="coerce")
        header = schema.CSV_COLUMNS[field]
        reject(number.isna() | (number % 1 != 0), header, "not a whole number", _got(text, field))
        reject((number < low) | (number > high), header, f"outside {low}..{high}", _got(text, field))
        out[field] = number.fillna(0).astype("int64")
    billing = pd.to_numeric(text["billing_amount"], errors="coerce")
    reject(billing.isna(), "Billing Amount", "not a number", _got(text, "billing_amount"))
    reject(billing.abs() > schema.BILLING_MAX, "Billing Amount", f"above {schema.BILLING_MAX:,.0f}",
           _got(text, "billing_amount"))
    out["billing_amount"] = billing.abs().fillna(0.0).astype("float64")
    return billing < 0


def _dates(text: pd.DataFrame, out: pd.DataFrame, reject: Rejections) -> None:
    for field in ("date_of_admission", "discharge_date"):
        parsed = pd.to_datetime(text[field], format=schema.DATE_FORMAT, errors="coerce")
        reject(parsed.isna(), schema.CSV_COLUMNS[field], "not a date (YYYY-MM-DD)", _got(text, field))
        out[field] = parsed.astype("datetime64[ms]")
    stay = (out["discharge_date"] - out["date_of_admission"]).dt.days
    reject(stay < 0, "Discharge Date", "before Date of Admission")
    reject(stay > schema.STAY_DAYS_MAX, "Discharge Date", f"stay longer than {schema.STAY_DAYS_MAX} days")
    out["duration_days"] = stay.fillna(0).astype("int64")


def _categories(text: pd.DataFrame, out: pd.DataFrame, reject: Rejections) -> pd.Series:
    """Each value of a closed set in its canonical spelling. Returns which rows had one respelled."""
    canonicalized = pd.Series(False, index=text.index)
    for field, allowed in schema.CATEGORIES.items():
        canonical = text[field].str.casefold().map({v.casefold(): v for v in allowed})
        unknown = canonical.isna() & ~((field == "test_results") & (text[field] == ""))
        reject(unknown, schema.CSV_COLUMNS[field], f"not one of {list(allowed)}", _got(text, field))
        canonicalized |= canonical.notna() & (canonical != text[field])
        out[field] = canonical.fillna("")
    return canonicalized


def typed(raw: pd.DataFrame, text: pd.DataFrame, reject: Rejections) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    reject(raw["parse_error"].astype(str) != "", "row", "wrong number of fields", raw["parse_error"].astype(str))
    for field in schema.FIELDS:
        if field != "test_results":  # absent from older exports
            reject(text[field] == "", schema.CSV_COLUMNS[field], "required value is missing")
    out = pd.DataFrame(index=raw.index)
    out["line_number"] = raw["line_number"].astype("int64")
    out["name"] = normalize_names(text["name"])
    out["doctor"] = text["doctor"].str.replace(_SPACES_RE, " ", regex=True)
    out["hospital"] = normalize_hospitals(text["hospital"])
    repaired = {"negative_billing_corrected": _numbers(text, out, reject)}
    _dates(text, out, reject)
    repaired["categories_canonicalized"] = _categories(text, out, reject)
    repaired["names_normalized"] = out["name"] != text["name"]
    repaired["hospital_names_trimmed"] = out["hospital"] != text["hospital"]
    return out, repaired


class ChunkCleaner:
    def __init__(self, pseudonym_key: bytes):
        self.seen_keys = SeenKeys()
        self.pseudonym_key = pseudonym_key
        self.record_key_secret = record_key_secret(pseudonym_key)

    def clean(self, raw: pd.DataFrame) -> CleanedChunk:
        counts: Counter = Counter()
        raw = raw.reset_index(drop=True)
        text = raw[list(schema.FIELDS)].apply(lambda col: col.astype(str).str.strip())
        reject = Rejections(raw.index, counts)
        out, repaired = typed(raw, text, reject)
        bad = reject.rejected
        quarantined = raw.loc[bad, ["line_number", *schema.FIELDS]].rename(columns=schema.CSV_COLUMNS)
        quarantined["reason"] = reject.reasons[bad]

        good = out.loc[~bad].copy()
        good["record_key"] = record_keys(good, self.record_key_secret) if len(good) else pd.Series(dtype=str)
        duplicate = self.seen_keys.add(good["record_key"])
        counts["duplicates_removed"] = int(duplicate.sum())
        good = good.loc[~duplicate]
        good["patient_id"] = patient_ids(good, self.pseudonym_key) if len(good) else pd.Series(dtype=str)
        for rule, mask in repaired.items():  # repairs count only on the rows that are kept
            counts[rule] = int(mask.loc[good.index].sum())
        counts["rows_in"] = len(raw)
        counts["rows_cleaned"] = len(good)
        counts["rows_quarantined"] = int(bad.sum())
        cleaned = good[list(schema.CLEANED_COLUMNS)].astype(schema.CLEANED_DTYPES).reset_index(drop=True)
        return CleanedChunk(cleaned, quarantined[QUARANTINE_COLUMNS].reset_index(drop=True), counts)
