//! AFL target: config loading from TOML text. `Ok`, or an error on one
//! line; never a panic.

use tokengate::Config;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Err(e) = Config::from_toml_str(text) {
            let message = e.to_string();
            assert!(!message.contains(['\n', '\r']), "{message:?}");
        }
    });
}
