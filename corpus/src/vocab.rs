//! The words the formats draw from, and skewed picks among them (a few
//! values are common, most are rare, as in real logs).

use rand::RngExt as _;
use rand_pcg::Pcg64Mcg;

pub const USERS: [&str; 16] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "oscar", "peggy", "trent", "victor", "walter",
];

/// Names tried by password guessers, for `invalid user` lines.
pub const GUESSES: [&str; 10] = [
    "admin", "test", "oracle", "ubuntu", "postgres", "git", "pi", "support", "user", "guest",
];

pub const SERVICES: [&str; 8] = [
    "orders",
    "payments",
    "inventory",
    "shipping",
    "accounts",
    "search",
    "catalog",
    "billing",
];

pub const HTTP_PATHS: [&str; 12] = [
    "/",
    "/index.html",
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/api/v1/users/{id}",
    "/api/v1/items",
    "/api/v1/items/{id}/reviews",
    "/static/app.{id}.js",
    "/static/style.css",
    "/healthz",
    "/login",
    "/search?q={word}",
];

pub const SEARCH_WORDS: [&str; 10] = [
    "shoes", "laptop", "coffee", "garden", "lamp", "books", "camera", "desk", "bike", "tent",
];

pub const AGENTS: [&str; 6] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "kube-probe/1.30",
    "python-requests/2.32.3",
];

pub const JAVA_PACKAGES: [&str; 6] = [
    "com.example.orders",
    "com.example.payments",
    "com.example.db",
    "com.example.http",
    "com.example.cache",
    "com.example.queue",
];

pub const JAVA_CLASSES: [&str; 10] = [
    "OrderService",
    "PaymentGateway",
    "ConnectionPool",
    "RequestHandler",
    "CacheLoader",
    "BatchConsumer",
    "RetryPolicy",
    "SchemaRegistry",
    "SessionManager",
    "MetricsReporter",
];

pub const JAVA_METHODS: [&str; 10] = [
    "process", "acquire", "handle", "load", "poll", "commit", "execute", "lookup", "refresh", "run",
];

/// (exception class, message) pairs; `{n}` is a number.
pub const EXCEPTIONS: [(&str, &str); 6] = [
    (
        "java.lang.IllegalStateException",
        "connection pool exhausted (max {n})",
    ),
    ("java.net.SocketTimeoutException", "Read timed out"),
    ("java.lang.OutOfMemoryError", "Java heap space"),
    ("java.io.IOException", "Broken pipe"),
    (
        "java.util.concurrent.TimeoutException",
        "Timeout waiting for task after {n} ms",
    ),
    (
        "java.lang.NullPointerException",
        "Cannot invoke \"String.length()\" because \"key\" is null",
    ),
];

pub const FRAMEWORK_FRAMES: [&str; 6] = [
    "java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1144)",
    "java.base/java.util.concurrent.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:642)",
    "java.base/java.lang.Thread.run(Thread.java:1583)",
    "org.eclipse.jetty.server.handler.HandlerWrapper.handle(HandlerWrapper.java:122)",
    "org.eclipse.jetty.server.Server.handle(Server.java:516)",
    "io.netty.channel.AbstractChannelHandlerContext.invokeChannelRead(AbstractChannelHandlerContext.java:444)",
];

pub const UNITS: [&str; 8] = [
    "nginx.service",
    "docker.service",
    "containerd.service",
    "kubelet.service",
    "logrotate.service",
    "apt-daily.service",
    "fstrim.service",
    "systemd-tmpfiles-clean.service",
];

pub const CRON_COMMANDS: [&str; 5] = [
    "/usr/local/bin/backup.sh",
    "test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )",
    "/usr/lib/sysstat/debian-sa1 1 1",
    "command -v debian-sa1 > /dev/null && debian-sa1 1 1",
    "/opt/metrics/push.sh --quiet",
];

pub const INTERFACES: [&str; 3] = ["eth0", "eth1", "bond0"];

/// Picks from `items`, earlier ones more often (about Zipf with s = 1).
pub fn skewed<'a, T>(rng: &mut Pcg64Mcg, items: &'a [T]) -> &'a T {
    // Harmonic weights 1, 1/2, 1/3 … by rejection on a uniform index.
    loop {
        let i = rng.random_range(0..items.len());
        if rng.random_range(0..=i) == 0 {
            return &items[i];
        }
    }
}

/// Picks uniformly from `items`.
pub fn any<'a, T>(rng: &mut Pcg64Mcg, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// `n` lowercase hex digits.
pub fn hex(rng: &mut Pcg64Mcg, n: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..n)
        .map(|_| DIGITS[rng.random_range(0..16)] as char)
        .collect()
}

/// An address in one of the cluster's subnets.
pub fn ip(rng: &mut Pcg64Mcg) -> String {
    format!(
        "10.{}.{}.{}",
        *skewed(rng, &[250u8, 251, 12, 40]),
        rng.random_range(0..32),
        rng.random_range(2..250)
    )
}

/// An address outside the cluster (documentation ranges).
pub fn outside_ip(rng: &mut Pcg64Mcg) -> String {
    let net = *any(rng, &["203.0.113", "198.51.100", "192.0.2"]);
    format!("{net}.{}", rng.random_range(1..255))
}
