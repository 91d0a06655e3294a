use idem_runtime::{defaults, Defaults};

const IDEM: Defaults = defaults!(required, on_expired_key = false);

fn main() {}
