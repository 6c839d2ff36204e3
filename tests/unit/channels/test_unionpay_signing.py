"""UnionPay ACP 5.1.0 signatures (signMethod 01) exactly as formats/unionpay.md §3 defines them,
the signPubKeyCert chain and CN rule, and the k=v answer parser."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from paygrid.channels.unionpay import pki, signing

FIELDS = {
    "version": "5.1.0",
    "merId": "777290058110048",
    "orderId": "pay01J0000000000000000000000",
    "txnTime": "20261201120000",
    "txnAmt": "1",
    "accessType": "0",
    "certId": "69026276696",
}
# lower-case hex SHA-256 of the sorted k=v string, computed once by hand (hashlib)
DIGEST = "f7aa16cfc6bf7afa15c6b21091aaf02d3277e626cae1552ca82a7d5c69a73d04"


@pytest.fixture(scope="module")
def chain() -> pki.Chain:
    return pki.make_chain("777290058110048")


def test_the_sign_string_is_sorted_unencoded_k_v_without_signature() -> None:
    fields = {**FIELDS, "signature": "x", "frontUrl": "http://a/b?c=d&e"}
    content = signing.sign_content(fields)
    assert content.startswith("accessType=0&certId=69026276696&frontUrl=http://a/b?c=d&e&merId=")
    assert "signature" not in content
    assert signing.digest_hex(FIELDS) == DIGEST


def test_signature_is_sha256withrsa_over_the_hex_digest(chain: pki.Chain) -> None:
    signature = signing.sign(FIELDS, chain.merchant_sign.key)
    raw = base64.b64decode(signature)
    # verified independently: SHA256withRSA over the 64 ASCII hex characters, not the string
    chain.merchant_sign.cert.public_key().verify(  # type: ignore[call-arg, union-attr]
        raw, DIGEST.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
    )
    with pytest.raises(InvalidSignature):
        chain.merchant_sign.cert.public_key().verify(  # type: ignore[call-arg, union-attr]
            raw,
            signing.sign_content(FIELDS).encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )


def test_sign_request_drops_blanks_and_sets_cert_id(chain: pki.Chain) -> None:
    cert_id = signing.cert_id(chain.merchant_sign.cert)
    assert cert_id == str(chain.merchant_sign.cert.serial_number) and cert_id.isdigit()
    signed = signing.sign_request({**FIELDS, "reqReserved": ""}, chain.merchant_sign.key, cert_id)
    assert "reqReserved" not in signed and signed["certId"] == cert_id
    assert signed["signMethod"] == "01"
    assert signing.verify(signed, signing.rsa_public_key(chain.merchant_sign.cert))
    assert not signing.verify({**signed, "txnAmt": "2"}, signing.rsa_public_key(
        chain.merchant_sign.cert))  # fmt: skip


def test_answers_verify_through_the_chain_blank_fields_included(chain: pki.Chain) -> None:
    verifier = signing.CertVerifier(chain.root.cert_pem, chain.middle.cert_pem)
    answer = signing.sign_answer(
        {**FIELDS, "respCode": "00", "reserved": ""},
        chain.unionpay_sign.key,
        chain.unionpay_sign.cert_pem,
    )
    verifier.verify(answer)
    with pytest.raises(signing.SignatureError, match="signature"):
        verifier.verify({k: v for k, v in answer.items() if k != "reserved"})
    with pytest.raises(signing.SignatureError, match="signature"):
        verifier.verify({**answer, "respCode": "01"})
    with pytest.raises(signing.SignatureError, match="signMethod"):
        verifier.verify({**answer, "signMethod": "11"})


def test_a_certificate_from_another_chain_is_refused(chain: pki.Chain) -> None:
    verifier = signing.CertVerifier(chain.root.cert_pem, chain.middle.cert_pem)
    other = pki.make_chain("777290058110048")
    forged = signing.sign_answer(FIELDS, other.unionpay_sign.key, other.unionpay_sign.cert_pem)
    with pytest.raises(signing.SignatureError, match="chain"):
        verifier.verify(forged)
    # the merchant's own certificate is on the chain but names no 中国银联股份有限公司
    mine = signing.sign_answer(FIELDS, chain.merchant_sign.key, chain.merchant_sign.cert_pem)
    with pytest.raises(signing.SignatureError, match="CN"):
        verifier.verify(mine)
    lax = signing.CertVerifier(chain.root.cert_pem, chain.middle.cert_pem, validate_cn_name=False)
    lax.verify(mine)  # acpsdk.ifValidateCNName=false: UnionPay's own test environment


def test_an_expired_certificate_is_refused(chain: pki.Chain) -> None:
    verifier = signing.CertVerifier(chain.root.cert_pem, chain.middle.cert_pem)
    answer = signing.sign_answer(FIELDS, chain.unionpay_sign.key, chain.unionpay_sign.cert_pem)
    later = datetime.now(UTC) + timedelta(days=365 * pki.LEAF_YEARS + 10)
    with pytest.raises(signing.SignatureError, match="not valid now"):
        verifier.verify(answer, now=later)


def test_cn_rule_reads_the_third_part() -> None:
    chain = pki.make_chain("777290058110048")
    assert signing.cn_part(chain.unionpay_sign.cert) == "中国银联股份有限公司"
    assert signing.cn_part(chain.root.cert) is None


def test_kv_parser_keeps_braced_values_whole() -> None:
    text = (
        "respCode=00&reserved={a=1&b={c=2&d=3}}&signPubKeyCert=-----BEGIN CERTIFICATE-----\n"
        "MIIB+/x=\n-----END CERTIFICATE-----&respMsg=成功[0000000]&empty="
    )
    fields = signing.parse_kv(text)
    assert fields["reserved"] == "{a=1&b={c=2&d=3}}"
    assert fields["signPubKeyCert"].endswith("MIIB+/x=\n-----END CERTIFICATE-----")
    assert fields["respMsg"] == "成功[0000000]" and fields["empty"] == ""
    assert signing.parse_kv(signing.format_kv(fields)) == fields
    assert signing.parse_kv("") == {}


@pytest.mark.parametrize(
    "bad", ["a=1&a=2", "a=1&novalue", "=1", "a={1", "a=}1", "a=1&&b=2", "a=" + "{" * 9 + "}" * 9]
)
def test_kv_parser_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        signing.parse_kv(bad)


def test_digest_is_sha256_of_utf8() -> None:
    fields = {"orderDesc": "一杯咖啡", "a": "1"}
    expected = hashlib.sha256("a=1&orderDesc=一杯咖啡".encode()).hexdigest()
    assert signing.digest_hex(fields) == expected
