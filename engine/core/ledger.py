"""Double-entry postings of settlements and reversals (docs/contract.md section 8).

A posting is `(account, amount_fen)`: a positive amount is a debit, a negative
one a credit, so the postings of one transfer sum to zero and so do all the
balances. A settlement debits the insured region's funds
(`fund/{insuplc_admdvs}/{fund_pay_type}`) and the person's account
(`psnacct/{psn_no}`) and credits the institution's receivable
(`medins/{fixmedins_code}`) with `fund_pay_sumamt + acct_pay`. A reversal posts
the exact opposite. Legs with a zero amount are not posted, so a settlement
that no fund pays posts nothing.
"""
from __future__ import annotations

from engine.contract.protocol import FUND_ACCOUNT, FUND_BASIC, FUND_SECOND

LEGS_MAX = 4  # basic fund, second layer, personal account, institution


def fund_account(insuplc_admdvs: str, fund_pay_type: str) -> str:
    return f"fund/{insuplc_admdvs}/{fund_pay_type}"


def psnacct_account(psn_no: str) -> str:
    return f"psnacct/{psn_no}"


def medins_account(fixmedins_code: str) -> str:
    return f"medins/{fixmedins_code}"


def postings(
    sign: int, insuplc_admdvs: str, insutype: str, psn_no: str, fixmedins_code: str, amounts_fen: dict
) -> list[tuple[str, int]]:
    """The legs of one settlement (`sign` 1) or of its reversal (`sign` -1).

    `amounts_fen` are the settlement's own (positive) setlinfo amounts.
    """
    assert sign in (1, -1)
    hifp_fen = amounts_fen["hifp_pay"]
    second_fen = amounts_fen["hifmi_pay"] + amounts_fen["hifob_pay"]
    acct_fen = amounts_fen["acct_pay"]
    assert hifp_fen >= 0 and second_fen >= 0 and acct_fen >= 0
    assert hifp_fen + second_fen == amounts_fen["fund_pay_sumamt"]
    legs: list[tuple[str, int]] = []
    if hifp_fen:
        legs.append((fund_account(insuplc_admdvs, FUND_BASIC[insutype]), sign * hifp_fen))
    if second_fen:
        legs.append((fund_account(insuplc_admdvs, FUND_SECOND[insutype]), sign * second_fen))
    if acct_fen:
        # The personal account is the person's own (section 6: fund type 310200).
        assert FUND_ACCOUNT == "310200"
        legs.append((psnacct_account(psn_no), sign * acct_fen))
    # The legs balance by construction: the institution's leg is minus the sum of the others.
    total_fen = hifp_fen + second_fen + acct_fen
    if total_fen:
        legs.append((medins_account(fixmedins_code), -sign * total_fen))
    assert len(legs) <= LEGS_MAX
    return legs


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
