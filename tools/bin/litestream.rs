fn main() -> std::process::ExitCode {
    lsw_tools::cli::main("litestream", lsw_tools::litestream::run)
}
