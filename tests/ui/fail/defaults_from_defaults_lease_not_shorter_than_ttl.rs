use idem_runtime::{defaults, Defaults};

const BASE: Defaults = defaults!(lease = "1m");

const SHORT: Defaults = defaults!(defaults = BASE, ttl = "1m");

fn main() {}
