"""Pure helpers shared by the security addons and the CLI: key secrets, address sets,
path normalisation, rate-limit buckets, intrusion rules, flow security events."""
