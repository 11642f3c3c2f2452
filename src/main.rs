fn main() -> anyhow::Result<()> {
    accessgate::cmd::main()
}
