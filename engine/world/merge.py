"""A reloaded world against the one in force: what a running hub keeps, adds and changes (docs/contract.md
section 2; docs/server.md, "Reload").

The catalogue, policies, institutions and pre-payments are the new folder's. Persons,
chronic qualifications and filings are merged into the rows the hub already holds,
because journal rows, accumulators and visits name those rows:

- a person keeps its row; its static fields (certno, psn_name, insuplc_admdvs,
  insutype, psn_type) are the file's; its accumulators and balance stay the store's;
- a person new to the file gets a row after the others, with the file's values;
- a chronic qualification keeps its slot (and its accumulator); a new one gets a slot
  after the others, with the file's hifp_cd counted in the person's acc_year of the
  file; one the file no longer names is withdrawn (not in force, its slot kept for the
  reversals of what it paid); named again, it is in force again;
- the filings are the file's, wholly (the filings made online are the engine's own and
  are not touched).

A world that drops a person or an institution the hub holds is refused: what was
committed against them must stay answerable (a reversal, a 1101), so that is not a
daily update but another world (start with `--accept-world-change` for that).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.world.loader import World

PERSON_STATIC = ("psn_certno", "psn_name", "psn_insuplc", "psn_insutype", "psn_type")
PERSON_VALUES = ("psn_balc", "psn_acc_year", "psn_hifp_ip", "psn_hifp_op", "psn_ded_op", "psn_burden2",
                 "psn_second_paid")
CODES_NAMED_MAX = 3  # codes a refusal names
WORLD_FILES = ("institutions.csv", "catalogue.csv", "policies.json", "persons.csv", "chronic.csv", "filings.csv",
               "prepay.csv")
VERSION_HEX = 12  # the short hash a world's version is shown as


class MergeRefused(Exception):
    """The new world is not an update of the one in force; one line naming what it drops."""


@dataclasses.dataclass(frozen=True)
class WorldMerge:
    """The merged world (persons and chronic slots in the rows of the one in force, new ones after) and what
    changed. Rows [persons_before, n_persons) and slots [slots_before, len(chr_dise)) are new."""

    world: World
    persons_before: int
    persons_changed: np.ndarray  # rows (< persons_before) whose static fields changed
    slots_before: int
    chronic_withdrawn: frozenset  # slots not in force
    counts: dict  # what changed, for the report and the status page
    # The filings of the world in force that the merged world's begin with, in the same order (all of them: only
    # filings were appended, the daily case; a store then writes only the rest); -1 when they are not a prefix.
    filings_kept: int = -1

    @property
    def persons_added(self) -> int:
        return self.world.n_persons - self.persons_before


def _some(codes) -> str:
    shown = sorted(codes)[:CODES_NAMED_MAX]
    return ", ".join(shown) + (", ..." if len(codes) > CODES_NAMED_MAX else "")


def merge_world(current: World, new: World, withdrawn: frozenset = frozenset()) -> WorldMerge:
    """`new` (a folder just loaded and validated) merged into `current` (the world in force, persons and chronic
    slots in the store's rows); `withdrawn`: the slots of `current` not in force. MergeRefused when `new` drops a
    person or an institution."""
    dropped = set(current.inst_code) - set(new.inst_code)
    if dropped:
        raise MergeRefused(f"institutions.csv drops {len(dropped):,} institutions this hub serves ({_some(dropped)});"
                           " a world that drops institutions is another world: restart with --accept-world-change")
    n_old = current.n_persons
    # Each person of the world in force, its row in the new file; then the new file's other rows, in its order.
    pos = pc.index_in(current.psn_no, value_set=new.psn_no)
    if pos.null_count:
        missing = current.psn_no.filter(pc.is_null(pos))
        raise MergeRefused(f"persons.csv lacks {len(missing):,} persons this hub holds "
                           f"({_some(missing.to_pylist())}); a world that drops persons is another world: restart "
                           "with --accept-world-change")
    kept = pos.to_numpy(zero_copy_only=False).astype(np.int64)
    is_new = np.ones(new.n_persons, bool)
    is_new[kept] = False
    take = np.concatenate([kept, np.flatnonzero(is_new)])
    row_of_file = np.empty(new.n_persons, np.int64)  # new file's person row -> merged row
    row_of_file[take] = np.arange(new.n_persons)
    take_a = pa.array(take)
    persons = {k: getattr(new, k).take(take_a) for k in ("psn_no", *PERSON_STATIC)}
    persons.update({k: np.ascontiguousarray(getattr(new, k)[take]) for k in PERSON_VALUES})
    changed = np.zeros(n_old, bool)
    for k in PERSON_STATIC:
        changed |= pc.not_equal(persons[k][:n_old], getattr(current, k)).to_numpy(zero_copy_only=False)
    changed_rows = np.flatnonzero(changed)

    # Chronic slots: (merged person row, disease) -> slot.
    slot_of = {(int(p), d): k for k, (p, d) in enumerate(zip(current.chr_psn, current.chr_dise))}
    k_old = len(current.chr_dise)
    chr_psn, chr_dise, chr_cd = list(current.chr_psn.tolist()), list(current.chr_dise), list(current.chr_hifp_cd.tolist())
    named: set[int] = set()
    new_psn = row_of_file[new.chr_psn].tolist()
    for p, d, cd in zip(new_psn, new.chr_dise, new.chr_hifp_cd.tolist()):
        k = slot_of.get((p, d))
        if k is None:
            k = len(chr_dise)
            chr_psn.append(p)
            chr_dise.append(d)
            chr_cd.append(cd)
        named.add(k)
    now_withdrawn = frozenset(k for k in range(k_old) if k not in named)

    merged = dataclasses.replace(
        new, **persons,
        chr_psn=np.array(chr_psn, np.int32), chr_dise=chr_dise, chr_hifp_cd=np.array(chr_cd, np.int64),
        fil_psn=row_of_file[new.fil_psn].astype(np.int32),
    )
    old_filings, new_filings = _filing_keys(current), _filing_keys(merged)
    counts = {
        "persons_added": int(new.n_persons - n_old),
        "persons_changed": int(len(changed_rows)),
        "chronic_added": len(chr_dise) - k_old,
        "chronic_withdrawn": len(now_withdrawn - withdrawn),
        "chronic_restored": len(withdrawn - now_withdrawn),
        "filings_added": _count_not_in(new_filings, old_filings),
        "filings_removed": _count_not_in(old_filings, new_filings),
        "institutions_added": len(set(new.inst_code) - set(current.inst_code)),
        "catalogue_rows": len(new.cat_code),
        "policies": len(new.policies),
    }
    n_fil = len(old_filings)
    prefix = n_fil <= len(new_filings) and (n_fil == 0 or pc.all(pc.equal(old_filings, new_filings[:n_fil])).as_py())
    return WorldMerge(merged, n_old, changed_rows, k_old, now_withdrawn, counts, n_fil if prefix else -1)


def _filing_keys(w: World) -> pa.Array:
    """Each filing as one string, by Arrow (which lets go of the GIL: the hub serves while a reload merges)."""
    cols = [pa.array(w.fil_psn).cast(pa.string()), pa.array(w.fil_type, pa.string()), pa.array(w.fil_dest, pa.string()),
            pa.array(w.fil_begn).cast(pa.string()), pa.array(w.fil_end).cast(pa.string()),
            pa.array(w.fil_status, pa.string())]
    return pc.binary_join_element_wise(*cols, "|")


def _count_not_in(keys: pa.Array, others: pa.Array) -> int:
    return int(len(keys) - pc.sum(pc.is_in(keys, value_set=others)).as_py()) if len(keys) else 0


def world_version(folder: str) -> str:
    """A short hash of a world folder's files (their names and SHA-256), for the operator to tell worlds apart."""
    h = hashlib.sha256()
    for name in WORLD_FILES:
        try:
            with open(os.path.join(folder, name), "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            digest = ""
        h.update(f"{name}:{digest}\n".encode())
    return h.hexdigest()[:VERSION_HEX]
