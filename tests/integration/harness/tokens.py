"""Keys, JWKS documents and signed JWTs made in the tests (RSA-2048, P-256,
Ed25519, HMAC), with python3-cryptography: compact JWS assembled by hand, so
that tests can also make the tokens a gateway must refuse."""

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
import hmac
import hashlib


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _int_b64u(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(size, "big"))


class Key:
    """One signing key and its public JWK. kind: RS256, PS256, ES256, HS256, EdDSA."""

    def __init__(self, kind, kid):
        self.kind, self.kid = kind, kid
        if kind in ("RS256", "PS256"):
            self.priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pub = self.priv.public_key().public_numbers()
            self.jwk = {"kty": "RSA", "n": _int_b64u(pub.n), "e": _int_b64u(pub.e)}
        elif kind == "ES256":
            self.priv = ec.generate_private_key(ec.SECP256R1())
            pub = self.priv.public_key().public_numbers()
            self.jwk = {"kty": "EC", "crv": "P-256", "x": _int_b64u(pub.x, 32),
                        "y": _int_b64u(pub.y, 32)}
        elif kind == "EdDSA":
            self.priv = ed25519.Ed25519PrivateKey.generate()
            raw = self.priv.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)
            self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
        elif kind == "HS256":
            self.secret = hashlib.sha256(kid.encode() + b"-secret").digest()
            self.jwk = {"kty": "oct", "k": b64u(self.secret)}
        else:
            raise ValueError(kind)
        self.jwk.update({"kid": kid, "use": "sig"})

    def sign(self, data, alg=None):
        alg = alg or self.kind
        if alg == "RS256":
            return self.priv.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if alg == "PS256":
            return self.priv.sign(data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                    salt_length=32), hashes.SHA256())
        if alg == "ES256":
            r, s = decode_dss_signature(self.priv.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if alg == "EdDSA":
            return self.priv.sign(data)
        if alg == "HS256":
            return hmac.new(self.secret, data, hashlib.sha256).digest()
        raise ValueError(alg)


def jwks(*keys):
    return json.dumps({"keys": [k.jwk for k in keys]})


def token(key, claims=None, alg=None, kid=True, header=None, **extra):
    """A compact JWS of claims (iss/aud/exp defaults below) signed with key."""
    now = int(time.time())
    body = {"iss": "https://id.test", "aud": "shop", "sub": "user-1", "exp": now + 300}
    body.update(claims or {})
    body.update(extra)
    h = {"alg": alg or key.kind, "typ": "JWT"}
    if kid:
        h["kid"] = key.kid
    h.update(header or {})
    signing = (b64u(json.dumps(h).encode()) + "." + b64u(json.dumps(body).encode())).encode()
    return signing.decode() + "." + b64u(key.sign(signing, alg if alg in (
        "RS256", "PS256", "ES256", "EdDSA", "HS256") else None))


def unsigned(claims=None):
    """alg none: what a gateway must never accept."""
    now = int(time.time())
    body = {"iss": "https://id.test", "aud": "shop", "sub": "admin", "exp": now + 300}
    body.update(claims or {})
    return b64u(b'{"alg":"none","typ":"JWT"}') + "." + b64u(json.dumps(body).encode()) + "."
