fn main() -> std::process::ExitCode {
    lsw_tools::cli::main("lsw-segment", lsw_tools::segment::run)
}
