//! A prepared plugin's exported functions, found once.
//!
//! The generated `*Pre::instantiate` looks up and type-checks *every* function of the
//! kind's export interface on every instantiation (`GuestIndices::load`): about a quarter of
//! a fresh instance's instantiation time, for functions the invocation never calls. Here the
//! first instance of a pre still goes through the generated bindings, which type-check every
//! export against the host's signatures (so a mistyped export fails the first call, the
//! upload's `describe`, as before). Later instances of the same pre instantiate the bare
//! component and fetch only the function they call, by an index found at prepare time.

use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Lower, TypedFunc,
};
use wasmtime::Store;

use super::host::HostState;
use crate::kind::PluginKind;

/// The version of the `weft:plugin` package, as exported interface names carry it.
const WIT_VERSION: &str = "0.1.0";

/// The exported functions of one prepared component.
pub struct Exports {
    /// Each function of the kind's export interface, by WIT name.
    funcs: Vec<(&'static str, ComponentExportIndex)>,
    /// Set once an instance of this component has been loaded through the generated
    /// bindings, which type-check every export. The component, and so every export's type,
    /// is the same for every instance of the pre.
    checked: AtomicBool,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports")
            .field(
                "funcs",
                &self.funcs.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("checked", &self.checked())
            .finish()
    }
}

impl Exports {
    /// Finds the indices of `kind`'s export functions in `pre`'s component.
    pub fn new(pre: &InstancePre<HostState>, kind: PluginKind) -> wasmtime::Result<Exports> {
        let component = pre.component();
        let interface = format!("{}@{WIT_VERSION}", kind.export_interface());
        let parent = component
            .get_export_index(None, &interface)
            .ok_or_else(|| wasmtime::format_err!("no exported instance named `{interface}`"))?;
        let funcs = kind
            .export_functions()
            .iter()
            .map(|&name| {
                component
                    .get_export_index(Some(&parent), name)
                    .map(|i| (name, i))
                    .ok_or_else(|| wasmtime::format_err!("`{interface}` does not export `{name}`"))
            })
            .collect::<wasmtime::Result<_>>()?;
        Ok(Exports {
            funcs,
            checked: AtomicBool::new(false),
        })
    }

    /// Whether every export has been type-checked: later instances may skip the generated
    /// bindings' per-instance lookup.
    pub fn checked(&self) -> bool {
        self.checked.load(Ordering::Acquire)
    }

    /// Records that an instance was loaded through the generated bindings.
    pub fn mark_checked(&self) {
        self.checked.store(true, Ordering::Release);
    }

    /// Calls the export `name` of `instance` with the generated bindings' signature
    /// `(P) -> R`, and returns its results.
    ///
    /// `P` and `R` must be the exact types the generated bindings use for that function
    /// (borrowed parameters, owned results); debug builds check them on every call.
    pub fn call<P, R>(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        name: &str,
        params: P,
    ) -> wasmtime::Result<R>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let index = self
            .funcs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, i)| i)
            .ok_or_else(|| wasmtime::format_err!("no export function `{name}`"))?;
        let func: TypedFunc<P, R> = if cfg!(debug_assertions) || !self.checked() {
            instance.get_typed_func(&mut *store, index)?
        } else {
            let func = instance
                .get_func(&mut *store, index)
                .ok_or_else(|| wasmtime::format_err!("no export function `{name}`"))?;
            #[allow(unsafe_code)]
            // SAFETY: `checked` is set only after the generated bindings loaded an instance
            // of this same component, type-checking every export against their signatures;
            // `P` and `R` are those signatures (debug builds, which the tests run, check
            // them on every call above). Every instance of the component has the same types.
            unsafe {
                TypedFunc::new_unchecked(func)
            }
        };
        func.call(&mut *store, params)
    }
}
