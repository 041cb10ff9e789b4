//! The real AWS CLI and boto3 as clients of the agent's EC2 API, with throwaway credentials
//! (never the user's `~/.aws`), run inside the node namespace where the API listens on
//! loopback. `scripts/setup-toolchain.sh` installs both.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use super::unique;

/// Where the setup script puts the AWS CLI and boto3 when the system has neither.
pub const VENV: &str = "/opt/sg-agent-tools/aws";

/// The AWS CLI and a Python with boto3 and the CLI's own package.
#[derive(Debug, Clone)]
pub struct AwsTools {
    pub aws: PathBuf,
    pub python: PathBuf,
}

impl AwsTools {
    /// The tools on `PATH` (`/usr/bin/python3` for Debian's packages), else in [`VENV`]; `None`
    /// if any is missing.
    pub fn find() -> Option<AwsTools> {
        let venv = Path::new(VENV).join("bin");
        let aws = which("aws").or_else(|| Some(venv.join("aws")).filter(|p| p.exists()))?;
        let usable = |p: &Path| {
            Command::new(p).args(["-c", "import boto3, awscli.clidriver"]).output().is_ok_and(|o| o.status.success())
        };
        let python = [PathBuf::from("python3"), PathBuf::from("/usr/bin/python3"), venv.join("python3")]
            .into_iter()
            .find(|p| usable(p))?;
        Some(AwsTools { aws, python })
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Writes an API credentials file (the AWS CLI's format, mode 0600): `(profile, key id, secret)`.
pub fn write_credentials(path: &Path, pairs: &[(&str, &str, &str)]) {
    let mut text = String::new();
    for (profile, id, secret) in pairs {
        text.push_str(&format!("[{profile}]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n\n"));
    }
    fs::write(path, text).expect("writing credentials");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod credentials");
}

/// A client of one endpoint: its own credentials and config files in a private directory.
pub struct AwsClient {
    pub tools: AwsTools,
    pub ns: String,
    pub endpoint: String,
    pub dir: PathBuf,
    profile: String,
}

impl AwsClient {
    /// A client in namespace `ns` for `http://<addr>`, signing with (`key_id`, `secret`).
    pub fn new(tools: &AwsTools, ns: &str, addr: &str, key_id: &str, secret: &str) -> AwsClient {
        let dir = PathBuf::from(format!("/run/{}", unique("aws")));
        fs::create_dir_all(&dir).expect("aws dir");
        write_credentials(&dir.join("credentials"), &[("sg-test", key_id, secret)]);
        fs::write(dir.join("config"), "[profile sg-test]\nregion = us-east-1\noutput = json\n").expect("aws config");
        AwsClient {
            tools: tools.clone(),
            ns: ns.to_owned(),
            endpoint: format!("http://{addr}"),
            dir,
            profile: "sg-test".to_owned(),
        }
    }

    /// The same endpoint with other keys.
    pub fn with_keys(&self, key_id: &str, secret: &str) -> AwsClient {
        AwsClient::new(&self.tools, &self.ns, self.endpoint.trim_start_matches("http://"), key_id, secret)
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"] {
            cmd.env_remove(var);
        }
        cmd.env("AWS_SHARED_CREDENTIALS_FILE", self.dir.join("credentials"))
            .env("AWS_CONFIG_FILE", self.dir.join("config"))
            .env("AWS_PROFILE", &self.profile)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_PAGER", "")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // An error is answered once: the tests check what the server says, not the retries.
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("SG_API_ENDPOINT", &self.endpoint);
        cmd
    }

    /// `aws ec2 ARGS --endpoint-url ...`.
    pub fn ec2(&self, args: &[&str]) -> Output {
        self.command(&self.tools.aws)
            .arg("ec2")
            .args(args)
            .args(["--endpoint-url", &self.endpoint])
            .output()
            .expect("running aws")
    }

    /// `aws ec2 ARGS` that must succeed; its JSON output (`null` if it prints nothing).
    #[track_caller]
    pub fn ec2_ok(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ec2(args);
        assert!(
            out.status.success(),
            "aws ec2 {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("aws ec2 {args:?}: not JSON ({e})"))
    }

    /// `aws ec2 ARGS` that must fail with EC2 error `code`; what the CLI printed.
    #[track_caller]
    pub fn ec2_error(&self, args: &[&str], code: &str) -> String {
        let out = self.ec2(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "aws ec2 {args:?} should fail with {code}, printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let operation = args.first().map(|a| pascal(a)).unwrap_or_default();
        let expected = format!("An error occurred ({code}) when calling the {operation} operation: ");
        assert!(stderr.contains(&expected), "aws ec2 {args:?}: expected `{expected}…`, got:\n{stderr}");
        stderr
    }

    /// The real CLI's driver with its signing clock moved by `minutes`.
    pub fn ec2_with_clock(&self, minutes: i64, args: &[&str]) -> Output {
        let script = format!(
            "import botocore.auth, datetime, sys\n\
             now = botocore.auth.get_current_datetime\n\
             botocore.auth.get_current_datetime = lambda *a, **k: now(*a, **k) + datetime.timedelta(minutes={minutes})\n\
             import awscli.clidriver\n\
             sys.exit(awscli.clidriver.main())\n"
        );
        self.command(&self.tools.python)
            .args(["-c", &script, "ec2"])
            .args(args)
            .args(["--endpoint-url", &self.endpoint])
            .output()
            .expect("running the aws CLI driver")
    }

    /// Runs a boto3 script (its environment names the endpoint as `SG_API_ENDPOINT`).
    pub fn boto3(&self, script: &Path, args: &[&str]) -> Output {
        self.command(&self.tools.python).arg(script).args(args).output().expect("running python")
    }
}

impl Drop for AwsClient {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `describe-security-groups` → `DescribeSecurityGroups`.
fn pascal(command: &str) -> String {
    command
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect()
}
