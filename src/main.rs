fn main() -> anyhow::Result<()> {
    accessgate::cli::main()
}
