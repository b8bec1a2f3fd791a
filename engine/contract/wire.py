"""The wire model: msgspec Structs for envelopes and replies, JSON and MessagePack.

docs/contract.md section 7. Decoding is lenient on types (fields are `Any`) so that
the engine, not the decoder, decides which error code a bad field earns, in the
order section 7 gives. JSON numbers reach us as their literal text (a
`float_hook` of `str`), so money never passes through a binary float.
"""
from __future__ import annotations

from typing import Any

import msgspec

from engine.contract.protocol import canonical


class Envelope(msgspec.Struct, gc=False):
    """The envelope of every transaction; `input` stays raw until the infno is known."""

    infno: Any = None
    msgid: Any = None
    mdtrtarea_admvs: Any = None
    insuplc_admdvs: Any = None
    fixmedins_code: Any = None
    fixmedins_name: Any = None
    inf_time: Any = None
    # Section 10: the sign-in a transaction is made under, and who made it (the journal keeps them).
    sign_no: Any = None
    opter: Any = None
    opter_name: Any = None
    input: msgspec.Raw = msgspec.Raw(b"")


class FeeLine(msgspec.Struct, gc=False):
    feedetl_sn: Any = None
    med_list_codg: Any = None
    det_item_fee_sumamt: Any = None
    cnt: Any = None
    pric: Any = None
    fee_ocur_time: Any = None


class SettleData(msgspec.Struct, gc=False):
    psn_no: Any = None
    mdtrt_id: Any = None
    med_type: Any = None
    insutype: Any = None
    medfee_sumamt: Any = None
    acct_used_flag: Any = "0"
    begntime: Any = None
    endtime: Any = None
    dise_codg: Any = None


class SettleInput(msgspec.Struct, gc=False):
    data: SettleData
    feedetail: list[FeeLine] | None = None


class SettleInputRaw(msgspec.Struct, gc=False):
    """SettleInput with its fee lines left raw, for FeeBuffer.parse (engine.core.engine)."""

    data: SettleData
    feedetail: msgspec.Raw = msgspec.Raw(b"")


class StepSettleData(msgspec.Struct, gc=False):
    """A step-wise settlement's data (section 11): the visit's lines of one batch, no feedetail."""

    psn_no: Any = None
    mdtrt_id: Any = None
    med_type: Any = None
    insutype: Any = None
    medfee_sumamt: Any = None
    acct_used_flag: Any = "0"
    chrg_bchno: Any = None
    mid_setl_flag: Any = None
    fulamt_ownpay_amt: Any = None
    overlmt_selfpay: Any = None
    preselfpay_amt: Any = None
    inscp_scp_amt: Any = None


class StepSettleInput(msgspec.Struct, gc=False):
    data: StepSettleData


class UploadLine(FeeLine, gc=False):
    """A fee line of a step-wise upload (2204, 2301): a FeeLine naming its visit and batch."""

    mdtrt_id: Any = None
    psn_no: Any = None
    chrg_bchno: Any = None


class UploadInput(msgspec.Struct, gc=False):
    feedetail: list[UploadLine]


class UploadInputRaw(msgspec.Struct, gc=False):
    """UploadInput with its fee lines left raw, for FeeBuffer.parse (engine.core.stepwise)."""

    feedetail: msgspec.Raw


class UploadLineIds(msgspec.Struct, gc=False):
    """An upload's fee line as its checks read it (engine.core.stepwise): UploadLine's fields that
    FeeBuffer.parse does not read, and feedetl_sn."""

    feedetl_sn: Any = None
    mdtrt_id: Any = None
    psn_no: Any = None
    chrg_bchno: Any = None


class ReverseData(msgspec.Struct, gc=False):
    setl_id: Any = None
    mdtrt_id: Any = None
    psn_no: Any = None


class ReverseInput(msgspec.Struct, gc=False):
    data: ReverseData


class PersonQueryData(msgspec.Struct, gc=False):
    mdtrt_cert_type: Any = None
    mdtrt_cert_no: Any = None


class PersonQueryInput(msgspec.Struct, gc=False):
    data: PersonQueryData


class SignInData(msgspec.Struct, gc=False):
    opter_no: Any = None
    mac: Any = None
    ip: Any = None


class SignInInput(msgspec.Struct, gc=False):
    signIn: SignInData


class SignOutData(msgspec.Struct, gc=False):
    sign_no: Any = None
    opter_no: Any = None


class SignOutInput(msgspec.Struct, gc=False):
    signOut: SignOutData


class Reply(msgspec.Struct, omit_defaults=True, gc=False):
    infcode: int
    inf_refmsgid: str
    refmsg_time: str
    respond_time: str
    err_msg: str
    err_code: str | None = None
    output: Any = None


DecodeError = (msgspec.DecodeError, msgspec.ValidationError)

# Formats of a part of a reply rendered by a kernel (engine.core.kernels.RowEmitter).
RAW_JSON, RAW_JSON_NUMBERS, RAW_MSGPACK = 0, 1, 2


class Codec:
    """Decoders and encoders for one format ('json' or 'msgpack')."""

    def __init__(self, fmt: str, money_numbers: bool = False):
        self.fmt = fmt
        # What a lazily rendered part of a reply (the `result` rows) is asked to produce.
        self.raw_fmt = RAW_MSGPACK if fmt == "msgpack" else (RAW_JSON_NUMBERS if money_numbers else RAW_JSON)
        if fmt == "json":
            mod = msgspec.json
            kw = {"float_hook": str}
        elif fmt == "msgpack":
            mod = msgspec.msgpack
            kw = {}
        else:
            raise ValueError(fmt)
        self.envelope = mod.Decoder(Envelope, **kw)
        self.settle = mod.Decoder(SettleInput, **kw)
        self.settle_raw = mod.Decoder(SettleInputRaw, **kw)
        self.is_json = fmt == "json"
        self.reverse = mod.Decoder(ReverseInput, **kw)
        self.person = mod.Decoder(PersonQueryInput, **kw)
        self.sign_in = mod.Decoder(SignInInput, **kw)
        self.step_settle = mod.Decoder(StepSettleInput, **kw)
        self.upload = mod.Decoder(UploadInput, **kw)
        self.upload_raw = mod.Decoder(UploadInputRaw, **kw)
        self.upload_ids = mod.Decoder(list[UploadLineIds], **kw)
        self.sign_out = mod.Decoder(SignOutInput, **kw)
        self.generic = mod.Decoder(**kw)
        raw_fmt = self.raw_fmt
        self.encoder = mod.Encoder(enc_hook=lambda obj: obj.to_raw(raw_fmt))

    def canonical_input(self, raw: msgspec.Raw) -> bytes | None:
        """The canonical form of a raw `input`, or None when it has none.

        None: it does not decode, or it holds what JSON cannot say (MessagePack
        binary, map keys that are not all strings), so it compares equal to nothing.
        """
        try:
            return canonical(self.generic.decode(raw))
        except (*DecodeError, TypeError, ValueError, RecursionError):
            return None


JSON = Codec("json")
MSGPACK = Codec("msgpack")
