"""The password forms pgpool-II and PostgreSQL store: pgpool's AES (pool_passwd), pcp's md5, SCRAM verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# ClusterSecrets.placeholders(): rendered as readable markers instead of being encrypted.
_PLACEHOLDER = re.compile(r"^<secret:(?P<name>[a-z_]+)>$")


# --- pgpool-II's AES (src/utils/ssl_utils.c): EVP_BytesToKey(aes-256-cbc, sha1, no salt, key, 1 round) gives
# key and IV; AES-256-CBC with PKCS#7 padding; pool_passwd holds "AES" + base64. Byte-compatible with pg_enc
# (checked on Debian's 4.3.5). pgpool strips the trailing newline of .pgpoolkey.
def _bytes_to_key(password: bytes) -> tuple[bytes, bytes]:
    derived, block = b"", b""
    while len(derived) < 48:
        block = hashlib.sha1(block + password).digest()
        derived += block
    return derived[:32], derived[32:48]


def pgpool_aes(password: str, key: str) -> str:
    """The AES string pg_enc prints for `password` with the pgpool key `key`."""
    if _PLACEHOLDER.match(password):
        return f"AES<encrypted:{_PLACEHOLDER.match(password)['name']}>"  # type: ignore[index]
    aes_key, iv = _bytes_to_key(key.strip("\n").encode())
    padder = padding.PKCS7(128).padder()
    data = padder.update(password.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    return "AES" + base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def pcp_md5(password: str) -> str:
    if _PLACEHOLDER.match(password):
        return f"<md5:{_PLACEHOLDER.match(password)['name']}>"  # type: ignore[index]
    return hashlib.md5(password.encode()).hexdigest()


def scram_sha256_verifier(password: str, salt: bytes, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, PostgreSQL's rolpassword format).
    Given to ALTER ROLE ... PASSWORD, it is stored as is: the plain password never reaches the server, so a failing
    statement logged by PostgreSQL (log_min_error_statement) or shown in pg_stat_activity holds no password."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def scram_salt(key: str, role: str) -> bytes:
    """A per-role salt derived from the cluster's secret pgpool key: the same verifier on every run (no diff in a
    preview when nothing changed), not guessable without the key."""
    return hmac.new(key.encode(), f"pgha scram salt for {role}".encode(), "sha256").digest()[:16]
