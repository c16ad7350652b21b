//! Real load balancers in front of test servers: nginx (its stream module)
//! and HAProxy, each started in the foreground from a configuration written
//! to a scratch directory, stopped (and the directory removed) when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{PATIENCE, Server};

/// A running nginx or HAProxy.
pub struct Balancer {
    child: Child,
    dir: PathBuf,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // SIGTERM: nginx's master then stops its workers (SIGKILL would
        // leave them running, holding the port).
        // SAFETY: kill(2) on a child we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("upcase-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn quiet(mut command: Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the load balancer")
}

/// nginx with `workers` worker processes and `config` (what goes at the
/// top level of nginx.conf: a `stream {}` block) included as it is.
pub fn nginx(name: &str, workers: usize, config: &str) -> Balancer {
    let dir = scratch(name);
    std::fs::write(dir.join("upcase.conf"), config).unwrap();
    let main = format!(
        "daemon off;\nworker_processes {workers};\npid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         events {{ worker_connections 1024; }}\ninclude {dir}/upcase.conf;\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let mut command = Command::new("nginx");
    command
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"));
    Balancer {
        child: quiet(command),
        dir,
    }
}

/// HAProxy with `config` as its whole configuration.
pub fn haproxy(name: &str, config: &str) -> Balancer {
    let dir = scratch(name);
    std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
    let mut command = Command::new("haproxy");
    command.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    Balancer {
        child: quiet(command),
        dir,
    }
}

/// Fails if a shipped configuration, its ports replaced for a test, still
/// names one of the 1200x ports outside its comments.
pub fn assert_ports_replaced(config: &str) {
    let directives: Vec<&str> = config
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(
        directives.iter().all(|l| !l.contains("1200")),
        "a port left unreplaced: {directives:#?}"
    );
}

/// `upcase server` on 127.0.0.1 taking PROXY protocol headers from a
/// balancer on 127.0.0.1, with `extra` options.
pub fn proxied_server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--listen",
        "127.0.0.1",
        "--proxy-protocol",
        "--trusted-proxy",
        "127.0.0.1/32",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A shipped configuration (`text`) pointed at the test: its two servers
/// (127.0.0.1:12001 and :12002) replaced by `servers`, its front port
/// 12000 by `front`, checked for a port left over.
pub fn pointed_at(text: &str, servers: &[Server; 2], front: u16) -> String {
    let config = text
        .replace("127.0.0.1:12001", &servers[0].tcp4().to_string())
        .replace("127.0.0.1:12002", &servers[1].tcp4().to_string())
        .replace(":12000", &format!(":{front}"))
        .replace("listen 12000", &format!("listen {front}"));
    assert_ports_replaced(&config);
    config
}
