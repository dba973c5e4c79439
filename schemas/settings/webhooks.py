"""Settings of webhooks: which callback URLs a request may name, how results are signed and sent."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator


class WebhookSettings(BaseModel):
    """The callback URL policy (checked at admission and again at send time), the signing keys, and
    the limits of one POST."""

    # --- Webhooks ----------------------------------------------------------------------------
    webhook_allow_hosts: str = Field(
        "",
        description=(
            "Hosts a request's `callback_url` may name, comma-separated: exact host names "
            "(`hooks.example.com`), suffixes (`*.example.com`: any name below it, not the name itself), "
            "CIDRs or addresses (`203.0.113.0/24`, `2001:db8::/32`, `10.1.2.3`) and `*` (any host name "
            "or public address). Empty = webhooks off: every `callback_url` is refused. Private, "
            "loopback, link-local, multicast and reserved addresses are refused (at admission for "
            "literals, at send time for what a name resolves to) unless a CIDR here holds them"
        ),
    )
    webhook_allow_ports: str = Field(
        "443",
        pattern=r"^ *(\*|\d{1,5}(-\d{1,5})?( *, *\d{1,5}(-\d{1,5})?)*) *$",
        description="Ports a `callback_url` may name: `443,8443`, ranges `8000-8100`, or `*` (any)",
    )
    webhook_allow_http_loopback: bool = Field(
        False,
        description=(
            "Also accept `http://` callback URLs whose host is a loopback address or `localhost` (for "
            "tests and local receivers; the host must still be allowed above). Otherwise https only"
        ),
    )
    webhook_keys: SecretStr = Field(
        SecretStr(""),
        description=(
            "Signing secrets per tenant: `tenant:secret,...` (an empty tenant name, `:secret`, is the key "
            "of requests without a tenant); a secret is at least 16 characters of `A-Za-z0-9_+/=.-`. A "
            "request with a `callback_url` whose tenant has no key is refused at admission. A secret: "
            "never logged or printed"
        ),
    )
    webhook_ca_certs: str = Field(
        "",
        description=(
            "PEM bundle of the CAs a receiver's certificate must chain to (private CAs, tests); empty = "
            "the system's trust store"
        ),
    )
    webhook_connect_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Seconds to resolve the host and open the TCP+TLS connection"
    )
    webhook_read_timeout_s: float = Field(
        5.0, gt=0, le=300, description="Seconds the receiver may stay silent while answering"
    )
    webhook_total_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description=(
            "Seconds one POST may take in all (resolve, connect, send, the answer's head and up to 4 KiB "
            "of its body); a slower receiver is a retryable `timeout`"
        ),
    )

    @field_validator("webhook_allow_hosts", "webhook_allow_ports")
    @classmethod
    def _lists_parse(cls, value: str, info: ValidationInfo) -> str:
        # here, not at the top: schemas.callbacks reads these settings
        from schemas.callbacks import parse_allow_hosts, parse_ports
        from schemas.errors import ConfigurationError

        parse = parse_allow_hosts if info.field_name == "webhook_allow_hosts" else parse_ports
        try:
            parse(value)  # a wrong entry stops the process at start, not at the first request
        except ConfigurationError as e:
            raise ValueError(str(e)) from None
        return value

    @field_validator("webhook_keys")
    @classmethod
    def _keys_parse(cls, value: SecretStr) -> SecretStr:
        from schemas.callbacks import parse_webhook_keys
        from schemas.errors import ConfigurationError

        try:
            parse_webhook_keys(value.get_secret_value())
        except ConfigurationError as e:
            raise ValueError(str(e)) from None  # names the entry, never the secret
        return value
