fn main() -> std::process::ExitCode {
    lsw_tools::cli::main("lsw-push", lsw_tools::push::run)
}
