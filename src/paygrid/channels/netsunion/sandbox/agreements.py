"""Agreement signing (身份认证及签约, epcc.101): TrxCtgy 0201 asks (the bank checks the details
and texts the payer a one-time code), 0202 confirms with the code (AuthMsg) and returns the
agreement number (SgnNo). Both idempotent on the member's TrxId.

The simulated banks (MODELLED): any well-formed account is theirs, except one whose number
ends in ``0000``, which the bank refuses as not matching its records (NU4102), so a test can
see a refusal. The code is six digits, good for ``sms_code_ttl_seconds``; after
``sms_max_attempts`` wrong codes, or once it expired, the agreement FAILED (ask anew under a
new TrxId). The SMS "sent" is readable at ``GET /sandbox/sms``, outside the protocol.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING

from paygrid.channels.netsunion import crypto, wire
from paygrid.channels.netsunion.banks import CODES
from paygrid.channels.netsunion.sandbox import protocol as p
from paygrid.channels.netsunion.sandbox.store import Agreement
from paygrid.kernel.banks import bank_name

if TYPE_CHECKING:
    from paygrid.channels.netsunion.sandbox.service import NetsUnionSandbox

PENDING_CODE = "PENDING_CODE"
SIGNED = "SIGNED"
FAILED = "FAILED"
ID_CARD = "01"
REFUSED_SUFFIX = "0000"
MAX_NAME_CHARS = 30


def handle(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    category = message.text("TrxInf/TrxCtgy")
    if category == wire.AGREEMENT_ASK:
        return ask(sandbox, message, now)
    if category == wire.AGREEMENT_CONFIRM:
        return confirm(sandbox, message, now)
    raise p.bad("TrxCtgy 须为 0201 或 0202")


def _details(sandbox: NetsUnionSandbox, message: wire.Message) -> dict[str, str]:
    try:
        values = {
            name: wire.secret(message, f"SgnInf/{name}", sandbox.keys)
            for name in ("SgnAcctId", "SgnAcctNm", "IDNo", "MobNo")
        }
    except crypto.CryptoError as exc:
        raise p.bad(f"敏感信息无法解密: {exc}") from exc
    id_no = values["IDNo"] or ""
    name = values["SgnAcctNm"] or ""
    if message.text("SgnInf/IDTp") != ID_CARD or len(id_no) != 18 or not id_no[:17].isdigit():
        raise p.bad("证件类型或证件号码不正确")
    if not 0 < len(name) <= MAX_NAME_CHARS:
        raise p.bad("SgnAcctNm 不正确")
    if message.text("SgnInf/SgnAcctTp") != "00":
        raise p.bad("SgnAcctTp 须为 00")
    mobile = p.digits(values["MobNo"], 11, 11, "MobNo")
    return {
        "account_no": p.digits(values["SgnAcctId"], 12, 19, "SgnAcctId"),
        "holder_name": name,
        "id_no": id_no,
        "mobile": mobile,
    }


def ask(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    ref = p.trx_id(message, "TrxInf/TrxId")
    bank_id = p.required(message, "SgnInf/SgnAcctIssrId", 14)
    details = _details(sandbox, message)
    if bank_id not in CODES:
        raise p.BusinessRefusal(p.BANK_UNKNOWN, "不支持的发卡机构", _echo(ref, message))
    digest = hashlib.sha256(json.dumps([bank_id, details], sort_keys=True).encode()).hexdigest()
    with sandbox.store.transaction():
        found = sandbox.store.get_agreement(sandbox.member_id, ref)
        if found is not None and found.request_digest != digest:
            raise p.BusinessRefusal(p.CONFLICT, "TrxId 重复且信息不一致", _echo(ref, message))
        if found is None:
            found = Agreement(
                sandbox.member_id, ref, bank_id, details["account_no"], details["holder_name"],
                ID_CARD, details["id_no"], details["mobile"], digest, PENDING_CODE, "", 0.0, 0,
                None, "", now, now,
            )  # fmt: skip
            if details["account_no"].endswith(REFUSED_SUFFIX):
                found = found.with_changes(state=FAILED, failure=p.ACCOUNT_MISMATCH)
            sandbox.store.insert_agreement(found)
        if found.state == PENDING_CODE and now >= found.code_expires_at:
            found = _send_code(sandbox, found, now)  # first ask, or asked again once expired
    return _answer(found)


def _send_code(sandbox: NetsUnionSandbox, agreement: Agreement, now: float) -> Agreement:
    code = f"{secrets.randbelow(10**6):06d}"
    ttl = sandbox.settings.sms_code_ttl_seconds
    bank = bank_name(CODES[agreement.bank_id])
    text = f"【{bank}】验证码{code}，您正在签约网联协议支付，{ttl // 60}分钟内有效，请勿泄露。"
    sandbox.store.add_sms(agreement.mobile, agreement.trx_id, code, text, now)
    sent = agreement.with_changes(code=code, code_expires_at=now + ttl, attempts=0, updated_at=now)
    sandbox.store.update_agreement(sent)
    return sent


def confirm(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    ref = p.trx_id(message, "TrxInf/TrxId")
    code = p.digits(message.text("TrxInf/AuthMsg"), 4, 8, "AuthMsg")
    with sandbox.store.transaction():
        found = sandbox.store.get_agreement(sandbox.member_id, ref)
        if found is None:
            raise p.BusinessRefusal(p.NOT_FOUND, "签约申请不存在", _echo(ref, message))
        if found.state == PENDING_CODE:
            found = _check_code(sandbox, found, code, now)
    if found.state == PENDING_CODE:
        left = sandbox.settings.sms_max_attempts - found.attempts
        extra: wire.Node = {**_echo(ref, message), "SgnInf": {"AuthRmngTms": str(left)}}
        raise p.BusinessRefusal(p.WRONG_CODE, "短信验证码错误", extra)
    return _answer(found)


def _check_code(
    sandbox: NetsUnionSandbox, agreement: Agreement, code: str, now: float
) -> Agreement:
    settings = sandbox.settings
    if now >= agreement.code_expires_at:
        moved = agreement.with_changes(state=FAILED, failure=p.CODE_EXPIRED, updated_at=now)
    elif hmac.compare_digest(code, agreement.code):
        sgn_no = p.new_number("SGN", now)
        moved = agreement.with_changes(state=SIGNED, sgn_no=sgn_no, code="", updated_at=now)
    elif agreement.attempts + 1 >= settings.sms_max_attempts:
        moved = agreement.with_changes(
            state=FAILED, failure=p.TOO_MANY_TRIES, attempts=agreement.attempts + 1, updated_at=now
        )
    else:
        moved = agreement.with_changes(attempts=agreement.attempts + 1, updated_at=now)
    sandbox.store.update_agreement(moved)
    return moved


FAILURES = {
    p.ACCOUNT_MISMATCH: "账户信息与银行预留信息不符",
    p.CODE_EXPIRED: "短信验证码已过期",
    p.TOO_MANY_TRIES: "短信验证码错误次数过多",
}


def _echo(ref: str, message: wire.Message) -> wire.Node:
    return {"TrxInf": {"TrxId": ref, "TrxCtgy": message.text("TrxInf/TrxCtgy")}}


def _answer(agreement: Agreement) -> wire.Node:
    sgn: wire.Node = {
        "SgnNo": agreement.sgn_no,
        "SgnAcctIssrId": agreement.bank_id,
        "SgnAcctIdMsk": p.masked(agreement.account_no),
        "MobNoMsk": agreement.mobile[:3] + "****" + agreement.mobile[-4:],
    }
    trx: wire.Node = {"TrxId": agreement.trx_id}
    if agreement.state == FAILED:
        description = FAILURES.get(agreement.failure, "签约失败")
        raise p.BusinessRefusal(agreement.failure, description, {"TrxInf": trx, "SgnInf": sgn})
    return {"BizInf": {"BizStsCd": wire.BIZ_SUCCESS}, "TrxInf": trx, "SgnInf": sgn}
