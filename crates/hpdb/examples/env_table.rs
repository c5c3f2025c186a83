//! Prints the `DB_*` and `REDIS_*` variables as Markdown table rows
//! (variable, flag, what it does, default), from `hpdb::env::ENV_VARS`:
//! how the README's Configuration table is made (a test keeps it equal).
//!
//! `cargo run -p hpdb --example env_table`

fn main() {
    println!("| variable | flag | meaning | default |\n| --- | --- | --- | --- |");
    for var in hpdb::env::ENV_VARS {
        println!("{}", var.markdown_row());
    }
}
