//! A prepared plugin's exported functions, found once.
//!
//! The generated `*Pre::instantiate` looks up and type-checks *every* function of the
//! kind's export interface on every instantiation (`GuestIndices::load`): about a quarter of
//! a fresh instance's instantiation time, for functions the invocation never calls. Here
//! every instance is the bare component; the first instance of a pre is type-checked by the
//! generated bindings' `Indices::load` (so a mistyped export fails the first call, the
//! upload's `describe`, as before), and every call fetches only the function it calls, by
//! an index found at prepare time.

use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Lower, TypedFunc,
};
use wasmtime::Store;

use super::host::HostState;
use crate::kind::{unversioned, PluginKind};

/// The exported functions of one prepared component.
pub struct Exports {
    /// Each function of the kind's export interface, by WIT name.
    funcs: Vec<(String, ComponentExportIndex)>,
    /// Set once an instance of this component has passed the generated bindings' type
    /// check of every export. The component, and so every export's type, is the same for
    /// every instance of the pre.
    checked: AtomicBool,
}

impl Exports {
    /// Finds the indices of the functions of `kind`'s export interface in `pre`'s
    /// component, as its type lists them.
    pub fn new(pre: &InstancePre<HostState>, kind: PluginKind) -> wasmtime::Result<Exports> {
        let (component, engine) = (pre.component(), pre.engine());
        let ty = component.component_type();
        let missing = || wasmtime::format_err!("no exported `{}`", kind.export_interface());
        let (interface, item) = ty
            .exports(engine)
            .find(|(name, _)| unversioned(name) == kind.export_interface())
            .ok_or_else(missing)?;
        let (ComponentItem::ComponentInstance(iface), Some(parent)) =
            (item.ty, component.get_export_index(None, interface))
        else {
            return Err(missing());
        };
        let funcs = iface
            .exports(engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
            .map(|(name, _)| {
                component
                    .get_export_index(Some(&parent), name)
                    .map(|i| (name.to_string(), i))
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

    /// Records that an instance passed the generated bindings' type check.
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
        self.typed::<P, R>(store, instance, name)?
            .call(&mut *store, params)
    }

    /// [`call`](Self::call) on a fiber, for a store whose host functions include async
    /// ones (a channel adapter's `outbound-http.send`).
    pub async fn call_async<P, R>(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        name: &str,
        params: P,
    ) -> wasmtime::Result<R>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let func = self.typed::<P, R>(store, instance, name)?;
        func.call_async(&mut *store, params).await
    }

    /// The export `name` of `instance` as a typed function.
    fn typed<P, R>(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        name: &str,
    ) -> wasmtime::Result<TypedFunc<P, R>>
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
        if cfg!(debug_assertions) || !self.checked() {
            return instance.get_typed_func(&mut *store, index);
        }
        let func = instance
            .get_func(&mut *store, index)
            .ok_or_else(|| wasmtime::format_err!("no export function `{name}`"))?;
        #[allow(unsafe_code)]
        // SAFETY: `checked` is set only after the generated bindings type-checked every
        // export of an instance of this same component against their signatures;
        // `P` and `R` are those signatures (debug builds, which the tests run, check
        // them on every call above). Every instance of the component has the same types.
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }
}
