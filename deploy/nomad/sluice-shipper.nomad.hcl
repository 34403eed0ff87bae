# Sluice's shipper on every Nomad client: a system job reading the
# allocations' logmon files, shipping to Kafka, serving tailll on port
# 7000 and registering in the node directory of a `sluice up
# --no-scheduler`. Set the bus and the admin service's address below; the
# token and TLS files come from the client's /etc/sluice (see
# deploy/README.md).
job "sluice-shipper" {
  type        = "system"
  datacenters = ["*"]

  group "shipper" {
    network {
      port "tail" {
        static = 7000
      }
    }

    task "shipper" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/sluice"
        args = [
          "shipper",
          "--layout", "nomad",
          "--root", "/opt/nomad/data/alloc",
          "--host", "${node.unique.name}",
          "--state-dir", "/var/lib/sluice/shipper",
          "--bus", "kafka://kafka.service.consul:9092",
          "--listen", "0.0.0.0:7000",
          "--advertise", "https://${attr.unique.network.ip-address}:7000",
          "--tokens", "/etc/sluice/tokens.toml",
          "--tls-cert", "/etc/sluice/tls.crt",
          "--tls-key", "/etc/sluice/tls.key",
          "--tls-ca", "/etc/sluice/ca.pem",
          "--register", "https://sluice.service.consul:7443",
          "--register-token-file", "/etc/sluice/register.token",
        ]
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
