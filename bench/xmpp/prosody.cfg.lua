-- Prosody for missive-bench B8 (bench/README.md says why each setting).
-- missive-bench replaces @DIR@, @PORT@, @CERT@ and @KEY@ and runs it as the
-- current user from a scratch directory.
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
certificates = "@DIR@"
ssl = { certificate = "@CERT@"; key = "@KEY@" }
log = { { levels = { min = "warn" }, to = "console" } }
interfaces = { "127.0.0.1" }
c2s_ports = { }
s2s_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }
c2s_direct_tls_ports = { @PORT@ }
modules_enabled = {
    "roster"; "saslauth"; "tls"; "disco"; "register"; "offline"; "smacks";
}
modules_disabled = { "s2s" }
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
allow_registration = true
registration_whitelist = { "127.0.0.1" }
smacks_hibernation_time = 300
smacks_max_queue_size = 5000
run_as_root = true
VirtualHost "bench"
    ssl = { certificate = "@CERT@"; key = "@KEY@" }
