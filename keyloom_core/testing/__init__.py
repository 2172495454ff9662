"""Test kits for Keyloom provider plugins.

- :mod:`keyloom_core.testing.authserver`: ``AuthorizationServer``, one generic RFC 6749 / 7636 /
  7009 fake authorization server that reads its dialect from a
  :class:`~keyloom_core.ProviderSpec`; a provider's emulator is a subclass that adds only its
  quirks. Start here.
- :mod:`keyloom_core.testing.emulator`, the emulator kit: the parts of a local, loopback-only
  provider emulator (grant bookkeeping, PKCE, consent pages, pending requests, rate limits,
  seeded fault injection, the :class:`~keyloom_core.testing.emulator.EmulatorServer` base
  class and its conformance convention) and the command line every emulator shares.
- :mod:`keyloom_core.testing.conformance`, the conformance kit: checks that drive a real
  :class:`~keyloom_core.Keyloom` through a provider's emulator (authorization URL, code
  exchange, profile, refresh, revocation, error mapping, scope policy, faults, secrets kept
  out of logs), as a pytest base class
  (:class:`~keyloom_core.testing.conformance.ProviderConformance`) or as
  :func:`~keyloom_core.testing.conformance.run_conformance`.
- :mod:`keyloom_core.testing.adapter`, the adapter contract: every rule a
  :class:`~keyloom_core.users.Adapter` must follow, as a pytest base class
  (:class:`~keyloom_core.testing.adapter.AdapterContract`) any adapter's tests subclass.
- :mod:`keyloom_core.testing.pytest_plugin`: the ``keyloom_conformance`` and
  ``keyloom_emulator`` fixtures, inert unless used.
"""
